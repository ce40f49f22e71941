//! The subset of Go's `text/template` that Docker's `--format` flag uses,
//! evaluated over `serde_json::Value` data, plus Docker's `table` and
//! `json` special formats and its tabwriter alignment.
//!
//! Supported: literal text, `{{.}}`, `{{.A.B}}`, `$`, `$var.Field`,
//! string (`"..."`, `` `raw` ``), integer, float and boolean literals,
//! pipelines, parentheses, `if`/`else if`/`else`/`end`, `with`,
//! `range` (with `$e :=` / `$i, $e :=` and `else`), `{{$x := ...}}`,
//! comments `{{/* */}}`, trim markers `{{- ` and ` -}}`, and the functions
//! `json join upper lower title split truncate pad print println len
//! index eq ne not and or`.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Number, Value};

/// A parse or execution error, one line: `template: :LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// 1-based line and column of the offending token, when known.
    pub pos: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some((l, c)) => write!(f, "template: :{l}:{c}: {}", self.message),
            None => write!(f, "template: {}", self.message),
        }
    }
}

impl std::error::Error for TemplateError {}

type Pos = (usize, usize);

fn err<T>(pos: Pos, msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError {
        pos: Some(pos),
        message: msg.into(),
    })
}

const FUNCS: &[&str] = &[
    "json", "join", "upper", "lower", "title", "split", "truncate", "pad", "print", "println",
    "len", "index", "eq", "ne", "not", "and", "or", "printf", "lt", "le", "gt", "ge", "slice",
];

/// Functions that, when rendering a table header, return their (string)
/// argument unchanged, as Docker's `HeaderFunctions` do.
const HEADER_IDENTITY: &[&str] = &[
    "json", "join", "upper", "lower", "title", "split", "truncate", "pad", "index",
];

// ---------------------------------------------------------------- AST

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipe),
    If {
        pipe: Pipe,
        then: Vec<Node>,
        els: Vec<Node>,
    },
    With {
        pipe: Pipe,
        then: Vec<Node>,
        els: Vec<Node>,
    },
    Range {
        pipe: Pipe,
        body: Vec<Node>,
        els: Vec<Node>,
    },
}

#[derive(Debug, Clone)]
struct Pipe {
    decl: Vec<String>,
    cmds: Vec<Cmd>,
}

#[derive(Debug, Clone)]
struct Cmd {
    args: Vec<Arg>,
    pos: Pos,
}

#[derive(Debug, Clone)]
enum Arg {
    /// `.A.B`; empty path is `.`.
    Dot(Vec<String>),
    /// `$name.A.B`; name "" is `$`.
    Var(String, Vec<String>),
    Lit(Value),
    Func(String),
    Paren(Pipe),
}

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
enum Tk {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Str(String),
    Num(Number),
    Pipe,
    LParen,
    RParen,
    Declare,
    Comma,
}

#[derive(Debug, Clone)]
struct Tok {
    kind: Tk,
    pos: usize,
}

enum Item {
    Text(String),
    Action { toks: Vec<Tok>, pos: usize },
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn ident_cont(b: u8) -> bool {
    ident_start(b) || b.is_ascii_digit()
}

struct Lexer<'a> {
    src: &'a str,
    b: &'a [u8],
    /// Offset of `src` inside the text the user wrote (for positions).
    base: usize,
    full: &'a str,
}

impl<'a> Lexer<'a> {
    fn pos(&self, off: usize) -> Pos {
        line_col(self.full, self.base + off)
    }

    fn fail<T>(&self, off: usize, msg: impl Into<String>) -> Result<T, TemplateError> {
        err(self.pos(off), msg)
    }

    fn lex(&self) -> Result<Vec<Item>, TemplateError> {
        let (src, b) = (self.src, self.b);
        let mut items = Vec::new();
        let mut i = 0;
        let mut trim_next = false;
        loop {
            let next = src[i..].find("{{").map(|o| i + o);
            // Docker replaces the two-character sequences `\t` and `\n`.
            let mut text = src[i..next.unwrap_or(b.len())]
                .replace("\\t", "\t")
                .replace("\\n", "\n");
            if trim_next {
                text = text.trim_start_matches([' ', '\t', '\r', '\n']).to_string();
                trim_next = false;
            }
            let Some(start) = next else {
                if !text.is_empty() {
                    items.push(Item::Text(text));
                }
                return Ok(items);
            };
            let mut j = start + 2;
            if b.get(j) == Some(&b'-') && b.get(j + 1).is_some_and(|c| is_space(*c)) {
                text = text.trim_end_matches([' ', '\t', '\r', '\n']).to_string();
                j += 2;
            }
            if !text.is_empty() {
                items.push(Item::Text(text));
            }
            if src[j..].starts_with("/*") {
                let Some(e) = src[j + 2..].find("*/") else {
                    return self.fail(start, "unclosed comment");
                };
                let mut k = j + 2 + e + 2;
                let ws = b[k..].iter().take_while(|c| is_space(**c)).count();
                if ws > 0 && src[k + ws..].starts_with("-}}") {
                    trim_next = true;
                    k += ws + 3;
                } else if src[k..].starts_with("}}") {
                    k += 2;
                } else {
                    return self.fail(k, "comment ends before closing delimiter");
                }
                i = k;
                continue;
            }
            let mut toks = Vec::new();
            loop {
                let ws0 = j;
                while j < b.len() && is_space(b[j]) {
                    j += 1;
                }
                if j >= b.len() {
                    return self.fail(start, "unclosed action");
                }
                if j > ws0 && src[j..].starts_with("-}}") {
                    trim_next = true;
                    j += 3;
                    break;
                }
                if src[j..].starts_with("}}") {
                    j += 2;
                    break;
                }
                let at = j;
                let c = b[j];
                let kind = match c {
                    b'|' => {
                        j += 1;
                        Tk::Pipe
                    }
                    b'(' => {
                        j += 1;
                        Tk::LParen
                    }
                    b')' => {
                        j += 1;
                        Tk::RParen
                    }
                    b',' => {
                        j += 1;
                        Tk::Comma
                    }
                    b':' if b.get(j + 1) == Some(&b'=') => {
                        j += 2;
                        Tk::Declare
                    }
                    b'"' => {
                        let (s, end) = self.lex_string(j)?;
                        j = end;
                        Tk::Str(s)
                    }
                    b'`' => match src[j + 1..].find('`') {
                        Some(e) => {
                            let s = src[j + 1..j + 1 + e].to_string();
                            j += e + 2;
                            Tk::Str(s)
                        }
                        None => return self.fail(j, "unterminated raw quoted string"),
                    },
                    b'.' if b.get(j + 1).is_some_and(|c| c.is_ascii_digit()) => {
                        let (n, end) = self.lex_number(j)?;
                        j = end;
                        Tk::Num(n)
                    }
                    b'.' => {
                        let (path, end) = self.lex_path(j);
                        j = end;
                        Tk::Field(path)
                    }
                    b'$' => {
                        let mut k = j + 1;
                        while k < b.len() && ident_cont(b[k]) {
                            k += 1;
                        }
                        let name = src[j + 1..k].to_string();
                        let (path, end) = if b.get(k) == Some(&b'.') {
                            self.lex_path(k)
                        } else {
                            (Vec::new(), k)
                        };
                        j = end;
                        Tk::Var(name, path)
                    }
                    b'-' | b'+' | b'0'..=b'9' => {
                        let (n, end) = self.lex_number(j)?;
                        j = end;
                        Tk::Num(n)
                    }
                    c if ident_start(c) => {
                        let mut k = j;
                        while k < b.len() && ident_cont(b[k]) {
                            k += 1;
                        }
                        let s = src[j..k].to_string();
                        j = k;
                        Tk::Ident(s)
                    }
                    _ => {
                        let ch = src[j..].chars().next().unwrap_or('?');
                        return self.fail(j, format!("unexpected {:?} in operand", ch.to_string()));
                    }
                };
                toks.push(Tok { kind, pos: at });
            }
            items.push(Item::Action { toks, pos: start });
            i = j;
        }
    }

    /// `.A.B` starting at a `.`; a lone `.` is the empty path.
    fn lex_path(&self, mut j: usize) -> (Vec<String>, usize) {
        let b = self.b;
        let mut path = Vec::new();
        while b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(|c| ident_start(*c)) {
            let mut k = j + 1;
            while k < b.len() && ident_cont(b[k]) {
                k += 1;
            }
            path.push(self.src[j + 1..k].to_string());
            j = k;
        }
        if path.is_empty() {
            j += 1;
        }
        (path, j)
    }

    fn lex_number(&self, start: usize) -> Result<(Number, usize), TemplateError> {
        let b = self.b;
        let mut j = start;
        if matches!(b[j], b'-' | b'+') {
            j += 1;
        }
        let digits0 = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let mut float = false;
        if b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(|c| c.is_ascii_digit()) {
            float = true;
            j += 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        }
        if j > digits0 && matches!(b.get(j), Some(b'e' | b'E')) {
            let mut k = j + 1;
            if matches!(b.get(k), Some(b'-' | b'+')) {
                k += 1;
            }
            if b.get(k).is_some_and(|c| c.is_ascii_digit()) {
                float = true;
                j = k;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            }
        }
        let text = &self.src[start..j];
        if j == digits0 || b.get(j).is_some_and(|c| ident_cont(*c) || *c == b'.') {
            return self.fail(start, format!("bad number syntax: {text:?}"));
        }
        let text = text.trim_start_matches('+');
        let n = if float {
            text.parse::<f64>().ok().and_then(Number::from_f64)
        } else {
            text.parse::<i64>().ok().map(Number::from)
        };
        match n {
            Some(n) => Ok((n, j)),
            None => self.fail(start, format!("bad number syntax: {text:?}")),
        }
    }

    fn lex_string(&self, start: usize) -> Result<(String, usize), TemplateError> {
        let (src, b) = (self.src, self.b);
        let mut out = String::new();
        let mut j = start + 1;
        loop {
            let seg = j;
            while j < b.len() && !matches!(b[j], b'"' | b'\\' | b'\n') {
                j += 1;
            }
            out.push_str(&src[seg..j]);
            match b.get(j) {
                Some(b'"') => return Ok((out, j + 1)),
                Some(b'\\') => {
                    let esc = b.get(j + 1).copied();
                    j += 2;
                    match esc {
                        Some(b'n') => out.push('\n'),
                        Some(b't') => out.push('\t'),
                        Some(b'r') => out.push('\r'),
                        Some(b'0') => out.push('\0'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'"') => out.push('"'),
                        Some(b'\'') => out.push('\''),
                        Some(e @ (b'x' | b'u' | b'U')) => {
                            let n = match e {
                                b'x' => 2,
                                b'u' => 4,
                                _ => 8,
                            };
                            let hex = src.get(j..j + n).unwrap_or("");
                            match u32::from_str_radix(hex, 16).ok().and_then(char::from_u32) {
                                Some(c) if hex.len() == n => out.push(c),
                                _ => return self.fail(j - 2, "invalid escape in quoted string"),
                            }
                            j += n;
                        }
                        _ => return self.fail(j - 2, "unknown escape sequence in quoted string"),
                    }
                }
                _ => return self.fail(start, "unterminated quoted string"),
            }
        }
    }
}

fn line_col(src: &str, off: usize) -> Pos {
    let off = off.min(src.len());
    let before = src.get(..off).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let col = match before.rfind('\n') {
        Some(nl) => before[nl + 1..].chars().count() + 1,
        None => before.chars().count() + 1,
    };
    (line, col)
}

// ---------------------------------------------------------------- parser

enum Stop {
    Eof,
    End,
    Else(Vec<Tok>, usize),
}

struct Parser<'a> {
    items: std::vec::IntoIter<Item>,
    lx: &'a Lexer<'a>,
}

impl Parser<'_> {
    fn list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(item) = self.items.next() {
            let (toks, pos) = match item {
                Item::Text(s) => {
                    nodes.push(Node::Text(s));
                    continue;
                }
                Item::Action { toks, pos } => (toks, pos),
            };
            let kw = match toks.first() {
                Some(Tok {
                    kind: Tk::Ident(s), ..
                }) => s.clone(),
                _ => String::new(),
            };
            match kw.as_str() {
                "end" => {
                    if let Some(t) = toks.get(1) {
                        return self.lx.fail(t.pos, "unexpected token in end");
                    }
                    return Ok((nodes, Stop::End));
                }
                "else" => return Ok((nodes, Stop::Else(toks[1..].to_vec(), pos))),
                "if" | "with" | "range" => nodes.push(self.block(&kw, &toks[1..], pos)?),
                "define" | "template" | "block" | "break" | "continue" => {
                    return self.lx.fail(pos, format!("{{{{{kw}}}}} is not supported"));
                }
                _ => nodes.push(Node::Action(self.pipe_all(&toks, pos)?)),
            }
        }
        Ok((nodes, Stop::Eof))
    }

    fn block(&mut self, kw: &str, toks: &[Tok], pos: usize) -> Result<Node, TemplateError> {
        let pipe = self.pipe_all(toks, pos)?;
        let max_decl = if kw == "range" { 2 } else { 1 };
        if pipe.decl.len() > max_decl {
            return self.lx.fail(pos, format!("too many declarations in {kw}"));
        }
        let (then, stop) = self.list()?;
        let els = match stop {
            Stop::Eof => {
                return self
                    .lx
                    .fail(pos, format!("unexpected EOF: missing {{{{end}}}} for {kw}"))
            }
            Stop::End => Vec::new(),
            Stop::Else(rest, epos) => match rest.first().map(|t| &t.kind) {
                None => match self.list()? {
                    (els, Stop::End) => els,
                    (_, Stop::Eof) => {
                        return self
                            .lx
                            .fail(pos, format!("unexpected EOF: missing {{{{end}}}} for {kw}"))
                    }
                    (_, Stop::Else(_, p)) => return self.lx.fail(p, "expected end; found else"),
                },
                Some(Tk::Ident(k)) if k == "if" || k == "with" => {
                    let k = k.clone();
                    vec![self.block(&k, &rest[1..], epos)?]
                }
                Some(_) => return self.lx.fail(epos, "unexpected tokens after else"),
            },
        };
        Ok(match kw {
            "if" => Node::If { pipe, then, els },
            "with" => Node::With { pipe, then, els },
            _ => Node::Range {
                pipe,
                body: then,
                els,
            },
        })
    }

    fn pipe_all(&self, toks: &[Tok], pos: usize) -> Result<Pipe, TemplateError> {
        let mut i = 0;
        let p = self.pipe(toks, &mut i, pos)?;
        if let Some(t) = toks.get(i) {
            return self.lx.fail(
                t.pos,
                format!("unexpected {} in command", describe(&t.kind)),
            );
        }
        Ok(p)
    }

    fn pipe(&self, toks: &[Tok], i: &mut usize, pos: usize) -> Result<Pipe, TemplateError> {
        let kind = |k: usize| toks.get(*i + k).map(|t| &t.kind);
        let mut decl = Vec::new();
        match (kind(0), kind(1), kind(2), kind(3)) {
            (Some(Tk::Var(a, pa)), Some(Tk::Declare), _, _) if pa.is_empty() => {
                decl.push(a.clone());
                *i += 2;
            }
            (Some(Tk::Var(a, pa)), Some(Tk::Comma), Some(Tk::Var(b, pb)), Some(Tk::Declare))
                if pa.is_empty() && pb.is_empty() =>
            {
                decl.push(a.clone());
                decl.push(b.clone());
                *i += 4;
            }
            _ => {}
        }
        let mut cmds = Vec::new();
        loop {
            let cpos = toks.get(*i).map_or(pos, |t| t.pos);
            let cmd = self.command(toks, i, cpos)?;
            cmds.push(cmd);
            match toks.get(*i).map(|t| &t.kind) {
                Some(Tk::Pipe) => *i += 1,
                _ => break,
            }
        }
        Ok(Pipe { decl, cmds })
    }

    fn command(&self, toks: &[Tok], i: &mut usize, pos: usize) -> Result<Cmd, TemplateError> {
        let mut args = Vec::new();
        while let Some(t) = toks.get(*i) {
            let arg = match &t.kind {
                Tk::Pipe | Tk::RParen => break,
                Tk::Declare | Tk::Comma => {
                    return self.lx.fail(
                        t.pos,
                        format!("unexpected {} in operand", describe(&t.kind)),
                    )
                }
                Tk::LParen => {
                    *i += 1;
                    let p = self.pipe(toks, i, t.pos)?;
                    match toks.get(*i) {
                        Some(Tok {
                            kind: Tk::RParen, ..
                        }) => *i += 1,
                        _ => return self.lx.fail(t.pos, "unclosed left paren"),
                    }
                    args.push(Arg::Paren(p));
                    continue;
                }
                Tk::Field(p) => Arg::Dot(p.clone()),
                Tk::Var(n, p) => Arg::Var(n.clone(), p.clone()),
                Tk::Str(s) => Arg::Lit(Value::String(s.clone())),
                Tk::Num(n) => Arg::Lit(Value::Number(n.clone())),
                Tk::Ident(s) => match s.as_str() {
                    "true" => Arg::Lit(Value::Bool(true)),
                    "false" => Arg::Lit(Value::Bool(false)),
                    "nil" => Arg::Lit(Value::Null),
                    f if FUNCS.contains(&f) => Arg::Func(s.clone()),
                    "if" | "else" | "end" | "range" | "with" => {
                        return self
                            .lx
                            .fail(t.pos, format!("unexpected keyword {s:?} in command"))
                    }
                    _ => return self.lx.fail(t.pos, format!("function {s:?} not defined")),
                },
            };
            *i += 1;
            args.push(arg);
        }
        if args.is_empty() {
            return self.lx.fail(pos, "missing value for command");
        }
        if args.len() > 1 && !matches!(args[0], Arg::Func(_)) {
            return self.lx.fail(pos, "can't give argument to non-function");
        }
        Ok(Cmd {
            args,
            pos: self.lx.pos(pos),
        })
    }
}

fn describe(k: &Tk) -> String {
    match k {
        Tk::Pipe => "\"|\"".into(),
        Tk::LParen => "\"(\"".into(),
        Tk::RParen => "\")\"".into(),
        Tk::Comma => "\",\"".into(),
        Tk::Declare => "\":=\"".into(),
        Tk::Ident(s) => format!("{s:?}"),
        Tk::Str(s) => format!("{s:?}"),
        Tk::Num(n) => n.to_string(),
        Tk::Field(p) => format!("<.{}>", p.join(".")),
        Tk::Var(n, _) => format!("${n}"),
    }
}

// ---------------------------------------------------------------- public API

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    table: bool,
}

/// What a `--format` flag asks for.
#[derive(Debug, Clone)]
pub enum Format {
    /// `--format json`: each row as one line of compact JSON.
    Json,
    /// `--format table` (None: the command's default table) or
    /// `--format 'table {{.ID}}\t{{.Name}}'`.
    Table(Option<Template>),
    /// Any other Go template: one rendered line per row.
    Template(Template),
}

fn table_body(src: &str) -> Option<&str> {
    let rest = src.strip_prefix("table")?;
    if rest.is_empty() || rest.starts_with(|c: char| c.is_whitespace()) {
        Some(rest)
    } else {
        None
    }
}

/// Parses a Go template. A leading `table ` marks a Docker table template
/// (the prefix is removed and surrounding spaces trimmed). As Docker does,
/// the two-character sequences `\t` and `\n` in literal text become a tab
/// and a newline.
pub fn parse(src: &str) -> Result<Template, TemplateError> {
    let (body, table) = match table_body(src) {
        Some(rest) => (rest.trim_matches(' '), true),
        None => (src, false),
    };
    let base = body.as_ptr() as usize - src.as_ptr() as usize;
    let lx = Lexer {
        src: body,
        b: body.as_bytes(),
        base,
        full: src,
    };
    let items = lx.lex()?;
    let mut p = Parser {
        items: items.into_iter(),
        lx: &lx,
    };
    match p.list()? {
        (nodes, Stop::Eof) => Ok(Template { nodes, table }),
        (_, Stop::End) => err(line_col(src, src.len()), "unexpected {{end}}"),
        (_, Stop::Else(_, pos)) => lx.fail(pos, "unexpected {{else}}"),
    }
}

/// Interprets a `--format` value as Docker does: `json`, `table` (or empty:
/// the default table), `table <template>`, or a plain template (surrounding
/// spaces trimmed).
pub fn format(s: &str) -> Result<Format, TemplateError> {
    match s {
        "json" => Ok(Format::Json),
        "" | "table" => Ok(Format::Table(None)),
        _ if table_body(s).is_some_and(|r| r.trim().is_empty()) => Ok(Format::Table(None)),
        _ if table_body(s).is_some() => Ok(Format::Table(Some(parse(s)?))),
        _ => Ok(Format::Template(parse(s.trim_matches(' '))?)),
    }
}

impl Format {
    /// Renders `rows`; `default_table` is used for `Table(None)`.
    pub fn render(
        &self,
        rows: &[Value],
        headers: &HashMap<String, String>,
        default_table: &Template,
    ) -> Result<String, TemplateError> {
        match self {
            Format::Json => {
                let mut out = String::new();
                for r in rows {
                    out.push_str(&json_string(r));
                    out.push('\n');
                }
                Ok(out)
            }
            Format::Table(Some(t)) => t.render_table(rows, headers),
            Format::Table(None) => default_table.render_table(rows, headers),
            Format::Template(t) => t.render_lines(rows),
        }
    }
}

impl Template {
    /// Whether the source started with `table`.
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// Executes the template with `data` as dot (and `$`).
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        self.exec(data, false)
    }

    fn exec(&self, data: &Value, header: bool) -> Result<String, TemplateError> {
        let mut ex = Exec {
            vars: vec![(String::new(), V::Val(data.clone()))],
            header,
            out: String::new(),
        };
        ex.walk(&self.nodes, &V::Val(data.clone()))?;
        Ok(ex.out)
    }

    /// One rendered line per row, each followed by `\n`.
    pub fn render_lines(&self, rows: &[Value]) -> Result<String, TemplateError> {
        let mut out = String::new();
        for r in rows {
            out.push_str(&self.render(r)?);
            out.push('\n');
        }
        Ok(out)
    }

    /// A header row, then one row per item, aligned on tabs like Docker's
    /// tabwriter (min width 10, padding 3). The header text for `{{.X}}` is
    /// `headers["X"]`, defaulting to `X` upper-cased.
    pub fn render_table(
        &self,
        rows: &[Value],
        headers: &HashMap<String, String>,
    ) -> Result<String, TemplateError> {
        let mut fields = Vec::new();
        collect_fields(&self.nodes, &mut fields);
        let mut hdr = Map::new();
        for f in fields {
            let text = headers.get(&f).cloned().unwrap_or_else(|| f.to_uppercase());
            hdr.insert(f, Value::String(text));
        }
        let mut buf = self.exec(&Value::Object(hdr), true)?;
        buf.push('\n');
        buf.push_str(&self.render_lines(rows)?);
        Ok(tabwrite(&buf, 10, 3))
    }
}

fn collect_fields(nodes: &[Node], out: &mut Vec<String>) {
    fn pipe(p: &Pipe, out: &mut Vec<String>) {
        for c in &p.cmds {
            for a in &c.args {
                match a {
                    Arg::Dot(path) | Arg::Var(_, path) => {
                        if let Some(f) = path.first() {
                            if !out.contains(f) {
                                out.push(f.clone());
                            }
                        }
                    }
                    Arg::Paren(p) => pipe(p, out),
                    Arg::Lit(_) | Arg::Func(_) => {}
                }
            }
        }
    }
    for n in nodes {
        match n {
            Node::Text(_) => {}
            Node::Action(p) => pipe(p, out),
            Node::If { pipe: p, then, els } | Node::With { pipe: p, then, els } => {
                pipe(p, out);
                collect_fields(then, out);
                collect_fields(els, out);
            }
            Node::Range { pipe: p, body, els } => {
                pipe(p, out);
                collect_fields(body, out);
                collect_fields(els, out);
            }
        }
    }
}

// ---------------------------------------------------------------- tabwriter

/// Go's `text/tabwriter` with left alignment and space padding: cells are
/// tab-terminated; a column block is a run of consecutive lines that have
/// a cell in that column.
fn tabwrite(text: &str, minwidth: usize, padding: usize) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut tw = TabWriter {
        lines: &lines,
        minwidth,
        padding,
        out: String::new(),
    };
    let mut widths = Vec::new();
    tw.format(&mut widths, 0, lines.len());
    tw.out
}

struct TabWriter<'a> {
    lines: &'a [Vec<&'a str>],
    minwidth: usize,
    padding: usize,
    out: String,
}

impl TabWriter<'_> {
    fn format(&mut self, widths: &mut Vec<usize>, mut line0: usize, line1: usize) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= self.lines[this].len() {
                this += 1;
                continue;
            }
            self.write_lines(widths, line0, this);
            line0 = this;
            let mut width = self.minwidth;
            while this < line1 {
                let line = &self.lines[this];
                if column + 1 >= line.len() {
                    break;
                }
                width = width.max(line[column].chars().count() + self.padding);
                this += 1;
            }
            widths.push(width);
            self.format(widths, line0, this);
            widths.pop();
            line0 = this;
        }
        self.write_lines(widths, line0, line1);
    }

    fn write_lines(&mut self, widths: &[usize], line0: usize, line1: usize) {
        for i in line0..line1 {
            for (j, cell) in self.lines[i].iter().enumerate() {
                self.out.push_str(cell);
                if let Some(w) = widths.get(j) {
                    let pad = w.saturating_sub(cell.chars().count());
                    self.out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            if i + 1 < self.lines.len() {
                self.out.push('\n');
            }
        }
    }
}

// ---------------------------------------------------------------- execution

/// A value, or Go's invalid value (a missing map key).
#[derive(Debug, Clone)]
enum V {
    Missing,
    Val(Value),
}

struct Exec {
    vars: Vec<(String, V)>,
    header: bool,
    out: String,
}

fn json_string(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Go's `%v` of a value decoded from JSON.
fn go_fmt(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                go_fmt(e, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push_str("map[");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                if let Some(e) = m.get(k) {
                    go_fmt(e, out);
                }
            }
            out.push(']');
        }
    }
}

fn text(v: &V) -> String {
    match v {
        V::Missing => "<no value>".into(),
        V::Val(v) => {
            let mut s = String::new();
            go_fmt(v, &mut s);
            s
        }
    }
}

fn truthy(v: &V) -> bool {
    match v {
        V::Missing | V::Val(Value::Null) => false,
        V::Val(Value::Bool(b)) => *b,
        V::Val(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        V::Val(Value::String(s)) => !s.is_empty(),
        V::Val(Value::Array(a)) => !a.is_empty(),
        V::Val(Value::Object(m)) => !m.is_empty(),
    }
}

fn type_name(v: &V) -> &'static str {
    match v {
        V::Missing => "missing value",
        V::Val(Value::Null) => "nil",
        V::Val(Value::Bool(_)) => "bool",
        V::Val(Value::Number(_)) => "number",
        V::Val(Value::String(_)) => "string",
        V::Val(Value::Array(_)) => "list",
        V::Val(Value::Object(_)) => "map",
    }
}

fn values_eq(a: &V, b: &V) -> bool {
    match (a, b) {
        (V::Val(Value::Number(x)), V::Val(Value::Number(y))) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (V::Val(x), V::Val(y)) => x == y,
        (V::Missing, V::Missing) => true,
        _ => false,
    }
}

impl Exec {
    fn walk(&mut self, nodes: &[Node], dot: &V) -> Result<(), TemplateError> {
        let mark = self.vars.len();
        for n in nodes {
            match n {
                Node::Text(s) => self.out.push_str(s),
                Node::Action(p) => {
                    let v = self.pipe(p, dot)?;
                    if p.decl.is_empty() {
                        self.out.push_str(&text(&v));
                    }
                }
                Node::If { pipe, then, els } => {
                    let m = self.vars.len();
                    let v = self.pipe(pipe, dot)?;
                    let branch = if truthy(&v) { then } else { els };
                    self.walk(branch, dot)?;
                    self.vars.truncate(m);
                }
                Node::With { pipe, then, els } => {
                    let m = self.vars.len();
                    let v = self.pipe(pipe, dot)?;
                    if truthy(&v) {
                        self.walk(then, &v)?;
                    } else {
                        self.walk(els, dot)?;
                    }
                    self.vars.truncate(m);
                }
                Node::Range { pipe, body, els } => self.range(pipe, body, els, dot)?,
            }
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn range(
        &mut self,
        pipe: &Pipe,
        body: &[Node],
        els: &[Node],
        dot: &V,
    ) -> Result<(), TemplateError> {
        let plain = Pipe {
            decl: Vec::new(),
            cmds: pipe.cmds.clone(),
        };
        let v = self.pipe(&plain, dot)?;
        let items: Vec<(Value, Value)> = match v {
            V::Missing | V::Val(Value::Null) => Vec::new(),
            V::Val(Value::Array(a)) => a
                .into_iter()
                .enumerate()
                .map(|(i, e)| (Value::from(i), e))
                .collect(),
            V::Val(Value::Object(m)) => m.into_iter().map(|(k, e)| (Value::String(k), e)).collect(),
            V::Val(Value::Number(n)) if n.as_u64().is_some() => (0..n.as_u64().unwrap_or(0))
                .map(|i| (Value::from(i), Value::from(i)))
                .collect(),
            other => {
                let pos = pipe.cmds.first().map_or((1, 1), |c| c.pos);
                return err(pos, format!("range can't iterate over {}", text(&other)));
            }
        };
        if items.is_empty() {
            return self.walk(els, dot);
        }
        let mark = self.vars.len();
        for (k, e) in items {
            match pipe.decl.as_slice() {
                [ev] => self.vars.push((ev.clone(), V::Val(e.clone()))),
                [kv, ev] => {
                    self.vars.push((kv.clone(), V::Val(k)));
                    self.vars.push((ev.clone(), V::Val(e.clone())));
                }
                _ => {}
            }
            self.walk(body, &V::Val(e))?;
            self.vars.truncate(mark);
        }
        Ok(())
    }

    fn pipe(&mut self, p: &Pipe, dot: &V) -> Result<V, TemplateError> {
        let mut val: Option<V> = None;
        for c in &p.cmds {
            val = Some(self.cmd(c, dot, val)?);
        }
        let v = val.unwrap_or(V::Missing);
        for name in &p.decl {
            self.vars.push((name.clone(), v.clone()));
        }
        Ok(v)
    }

    fn cmd(&mut self, c: &Cmd, dot: &V, fin: Option<V>) -> Result<V, TemplateError> {
        let Some((first, rest)) = c.args.split_first() else {
            return Ok(V::Missing);
        };
        match first {
            Arg::Func(name) => {
                let mut args = Vec::with_capacity(rest.len() + 1);
                for a in rest {
                    args.push(self.arg(a, dot, c.pos)?);
                }
                let piped = fin.is_some();
                args.extend(fin);
                self.call(name, args, piped, c.pos)
            }
            _ if fin.is_some() => err(c.pos, "can't give argument to non-function"),
            a => self.arg(a, dot, c.pos),
        }
    }

    fn arg(&mut self, a: &Arg, dot: &V, pos: Pos) -> Result<V, TemplateError> {
        match a {
            Arg::Dot(path) => self.field(dot, path, pos),
            Arg::Var(name, path) => {
                let Some(v) = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                else {
                    return err(pos, format!("undefined variable: ${name}"));
                };
                self.field(&v, path, pos)
            }
            Arg::Lit(v) => Ok(V::Val(v.clone())),
            Arg::Func(name) => self.call(name, Vec::new(), false, pos),
            Arg::Paren(p) => self.pipe(p, dot),
        }
    }

    fn field(&self, start: &V, path: &[String], pos: Pos) -> Result<V, TemplateError> {
        let mut cur = match start {
            V::Missing => None,
            V::Val(v) => Some(v),
        };
        for name in path {
            cur = match cur {
                None | Some(Value::Null) => None,
                Some(Value::Object(m)) => m.get(name),
                Some(other) if self.header => Some(other),
                Some(other) => {
                    let t = type_name(&V::Val(other.clone()));
                    return err(pos, format!("can't evaluate field {name} in type {t}"));
                }
            };
        }
        Ok(cur.map_or(V::Missing, |v| V::Val(v.clone())))
    }

    fn call(
        &mut self,
        name: &str,
        args: Vec<V>,
        piped: bool,
        pos: Pos,
    ) -> Result<V, TemplateError> {
        if self.header && HEADER_IDENTITY.contains(&name) {
            let v = if piped { args.last() } else { args.first() };
            return Ok(v.cloned().unwrap_or(V::Missing));
        }
        let want = |n: usize| -> Result<(), TemplateError> {
            if args.len() == n {
                Ok(())
            } else {
                err(
                    pos,
                    format!(
                        "wrong number of args for {name}: want {n} got {}",
                        args.len()
                    ),
                )
            }
        };
        let s = |v: &V| -> Result<String, TemplateError> {
            match v {
                V::Missing | V::Val(Value::Null) => Ok(String::new()),
                V::Val(Value::String(s)) => Ok(s.clone()),
                V::Val(Value::Number(_) | Value::Bool(_)) => Ok(text(v)),
                _ => err(
                    pos,
                    format!(
                        "wrong type for value in {name}; expected string; got {}",
                        type_name(v)
                    ),
                ),
            }
        };
        let int = |v: &V| -> Result<i64, TemplateError> {
            match v {
                V::Val(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or(0)),
                _ => err(
                    pos,
                    format!(
                        "wrong type for value in {name}; expected int; got {}",
                        type_name(v)
                    ),
                ),
            }
        };
        let st = |x: String| Ok(V::Val(Value::String(x)));
        match name {
            "json" => {
                want(1)?;
                match &args[0] {
                    V::Missing => st("null".into()),
                    V::Val(v) => st(json_string(v)),
                }
            }
            "upper" => {
                want(1)?;
                st(s(&args[0])?.to_uppercase())
            }
            "lower" => {
                want(1)?;
                st(s(&args[0])?.to_lowercase())
            }
            "title" => {
                want(1)?;
                let mut out = String::new();
                let mut prev_sep = true;
                for c in s(&args[0])?.chars() {
                    if prev_sep {
                        out.extend(c.to_uppercase());
                    } else {
                        out.push(c);
                    }
                    prev_sep = !(c.is_alphanumeric() || c == '_');
                }
                st(out)
            }
            "join" => {
                want(2)?;
                let sep = s(&args[1])?;
                let parts: Vec<String> = match &args[0] {
                    V::Missing | V::Val(Value::Null) => Vec::new(),
                    V::Val(Value::Array(a)) => a.iter().map(|e| text(&V::Val(e.clone()))).collect(),
                    other => {
                        return err(
                            pos,
                            format!(
                                "wrong type for value in join; expected list; got {}",
                                type_name(other)
                            ),
                        )
                    }
                };
                st(parts.join(&sep))
            }
            "split" => {
                want(2)?;
                let (src, sep) = (s(&args[0])?, s(&args[1])?);
                let parts: Vec<Value> = if sep.is_empty() {
                    src.chars().map(|c| Value::String(c.to_string())).collect()
                } else {
                    src.split(sep.as_str())
                        .map(|p| Value::String(p.into()))
                        .collect()
                };
                Ok(V::Val(Value::Array(parts)))
            }
            "truncate" => {
                want(2)?;
                let (src, n) = (s(&args[0])?, int(&args[1])?);
                st(src.chars().take(n.max(0) as usize).collect())
            }
            "pad" => {
                want(3)?;
                let (src, l, r) = (s(&args[0])?, int(&args[1])?, int(&args[2])?);
                if src.is_empty() {
                    return st(src);
                }
                let sp = |n: i64| " ".repeat(n.max(0) as usize);
                st(format!("{}{src}{}", sp(l), sp(r)))
            }
            "print" => {
                let mut out = String::new();
                let mut prev_str = false;
                for (i, a) in args.iter().enumerate() {
                    let is_str = matches!(a, V::Val(Value::String(_)));
                    if i > 0 && !is_str && !prev_str {
                        out.push(' ');
                    }
                    out.push_str(&text(a));
                    prev_str = is_str;
                }
                st(out)
            }
            "println" => {
                let mut out: Vec<String> = args.iter().map(text).collect::<Vec<_>>();
                out.push(String::new());
                let joined = out.join(" ");
                st(format!("{}\n", joined.strip_suffix(' ').unwrap_or(&joined)))
            }
            "len" => {
                want(1)?;
                let n = match &args[0] {
                    V::Val(Value::String(x)) => x.len(),
                    V::Val(Value::Array(a)) => a.len(),
                    V::Val(Value::Object(m)) => m.len(),
                    other => return err(pos, format!("len of {}", type_name(other))),
                };
                Ok(V::Val(Value::from(n)))
            }
            "index" => {
                let Some((first, keys)) = args.split_first() else {
                    return want(1).map(|_| V::Missing);
                };
                let mut cur = first.clone();
                for k in keys {
                    cur = match (&cur, k) {
                        (V::Val(Value::Object(m)), V::Val(Value::String(key))) => {
                            m.get(key).cloned().map_or(V::Missing, V::Val)
                        }
                        (V::Val(Value::Array(a)), V::Val(Value::Number(n))) => {
                            match n.as_u64().and_then(|i| a.get(i as usize)) {
                                Some(e) => V::Val(e.clone()),
                                None => {
                                    return err(
                                        pos,
                                        format!("error calling index: index out of range: {n}"),
                                    )
                                }
                            }
                        }
                        (c, k) => {
                            return err(
                                pos,
                                format!(
                                    "error calling index: can't index item of type {} with {}",
                                    type_name(c),
                                    type_name(k)
                                ),
                            )
                        }
                    };
                }
                Ok(cur)
            }
            "eq" | "ne" => {
                if args.len() < 2 || (name == "ne" && args.len() != 2) {
                    return err(pos, format!("wrong number of args for {name}"));
                }
                let any = args[1..].iter().any(|b| values_eq(&args[0], b));
                Ok(V::Val(Value::Bool(if name == "eq" { any } else { !any })))
            }
            "not" => {
                want(1)?;
                Ok(V::Val(Value::Bool(!truthy(&args[0]))))
            }
            "and" | "or" => {
                let is_and = name == "and";
                let Some(last) = args.last().cloned() else {
                    return err(
                        pos,
                        format!("wrong number of args for {name}: want at least 1 got 0"),
                    );
                };
                for a in args {
                    if truthy(&a) != is_and {
                        return Ok(a);
                    }
                }
                Ok(last)
            }
            "printf" => {
                let Some((f, rest)) = args.split_first() else {
                    return err(
                        pos,
                        "wrong number of args for printf: want at least 1 got 0",
                    );
                };
                st(sprintf(&s(f)?, rest))
            }
            "lt" | "le" | "gt" | "ge" => {
                want(2)?;
                let ord = compare(&args[0], &args[1]).ok_or_else(|| TemplateError {
                    pos: Some(pos),
                    message: format!(
                        "error calling {name}: incompatible types for comparison: {} and {}",
                        type_name(&args[0]),
                        type_name(&args[1])
                    ),
                })?;
                use std::cmp::Ordering::*;
                let b = match name {
                    "lt" => ord == Less,
                    "le" => ord != Greater,
                    "gt" => ord == Greater,
                    _ => ord != Less,
                };
                Ok(V::Val(Value::Bool(b)))
            }
            "slice" => {
                let Some((first, idx)) = args.split_first() else {
                    return want(1).map(|_| V::Missing);
                };
                if idx.len() > 2 {
                    return err(pos, "error calling slice: too many slice indexes");
                }
                let mut bounds = Vec::new();
                for i in idx {
                    bounds.push(int(i)?);
                }
                let cut = |len: usize| -> Result<(usize, usize), TemplateError> {
                    let lo = bounds.first().copied().unwrap_or(0);
                    let hi = bounds.get(1).copied().unwrap_or(len as i64);
                    if lo < 0 || hi < lo || hi > len as i64 {
                        return err(
                            pos,
                            format!("error calling slice: index out of range: {hi}"),
                        );
                    }
                    Ok((lo as usize, hi as usize))
                };
                match first {
                    V::Val(Value::String(x)) => {
                        let (lo, hi) = cut(x.len())?;
                        match x.get(lo..hi) {
                            Some(sub) => st(sub.to_string()),
                            None => err(pos, "error calling slice: not at a character boundary"),
                        }
                    }
                    V::Val(Value::Array(a)) => {
                        let (lo, hi) = cut(a.len())?;
                        Ok(V::Val(Value::Array(a[lo..hi].to_vec())))
                    }
                    other => err(
                        pos,
                        format!(
                            "error calling slice: can't slice item of type {}",
                            type_name(other)
                        ),
                    ),
                }
            }
            _ => err(pos, format!("function {name:?} not defined")),
        }
    }
}

/// Order two values as Go's `lt` does: numbers with numbers, strings with
/// strings.
fn compare(a: &V, b: &V) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (V::Val(Value::Number(x)), V::Val(Value::Number(y))) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => Some(i.cmp(&j)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (V::Val(Value::String(x)), V::Val(Value::String(y))) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Go's fmt.Sprintf for the verbs templates use: %v %s %d %q %x %X %f %t %%,
/// with flags `-`, `0`, width and precision. Missing arguments print as
/// `%!v(MISSING)`, extra ones are appended as `%!(EXTRA …)`, as Go does.
fn sprintf(f: &str, args: &[V]) -> String {
    let mut out = String::new();
    let mut chars = f.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut left, mut zero) = (false, false);
        while let Some(&fl) = chars.peek() {
            match fl {
                '-' => left = true,
                '0' => zero = true,
                '+' | ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut prec: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        let num = match arg {
            V::Val(Value::Number(n)) => Some(n),
            _ => None,
        };
        let mut body = match verb {
            'd' => match num.and_then(|n| n.as_i64()) {
                Some(i) => i.to_string(),
                None => format!("%!d({})", text(arg)),
            },
            'x' | 'X' => {
                let h = match num.and_then(|n| n.as_i64()) {
                    Some(i) => format!("{i:x}"),
                    None => text(arg).bytes().map(|b| format!("{b:02x}")).collect(),
                };
                if verb == 'X' {
                    h.to_uppercase()
                } else {
                    h
                }
            }
            'f' => match num.and_then(|n| n.as_f64()) {
                Some(x) => format!("{x:.*}", prec.unwrap_or(6)),
                None => format!("%!f({})", text(arg)),
            },
            'q' => serde_json::to_string(&text(arg)).unwrap_or_default(),
            't' => match arg {
                V::Val(Value::Bool(b)) => b.to_string(),
                _ => format!("%!t({})", text(arg)),
            },
            's' | 'v' => {
                let t = text(arg);
                match prec {
                    Some(p) if verb == 's' => t.chars().take(p).collect(),
                    _ => t,
                }
            }
            other => format!("%!{other}({})", text(arg)),
        };
        let w: usize = width.parse().unwrap_or(0);
        let len = body.chars().count();
        if len < w {
            let fill = w - len;
            if left {
                body.push_str(&" ".repeat(fill));
            } else if zero && matches!(verb, 'd' | 'f' | 'x' | 'X') {
                let (sign, digits) = match body.strip_prefix('-') {
                    Some(d) => ("-", d.to_string()),
                    None => ("", body.clone()),
                };
                body = format!("{sign}{}{digits}", "0".repeat(fill));
            } else {
                body = format!("{}{body}", " ".repeat(fill));
            }
        }
        out.push_str(&body);
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", type_name(a), text(a)))
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(src: &str, data: Value) -> String {
        match parse(src) {
            Ok(t) => match t.render(&data) {
                Ok(s) => s,
                Err(e) => panic!("render {src:?}: {e}"),
            },
            Err(e) => panic!("parse {src:?}: {e}"),
        }
    }

    #[test]
    fn printf_comparisons_and_slice() {
        let d = json!({"Name": "berth", "Size": 1234, "Tags": ["a", "b", "c"], "Ratio": 0.5});
        assert_eq!(
            r("{{printf \"%-8s|%5d|%05d\" .Name .Size .Size}}", d.clone()),
            "berth   | 1234|01234"
        );
        assert_eq!(
            r(
                "{{printf \"%q %v %.2f %x %%\" .Name .Tags .Ratio .Size}}",
                d.clone()
            ),
            "\"berth\" [a b c] 0.50 4d2 %"
        );
        assert_eq!(
            r("{{printf \"%s %s\" .Name}}", d.clone()),
            "berth %!s(MISSING)"
        );
        assert_eq!(
            r(
                "{{if lt .Size 2000}}small{{end}} {{if ge .Size 1234}}ge{{end}} {{gt .Name \"a\"}}",
                d.clone()
            ),
            "small ge true"
        );
        assert_eq!(r("{{le 1 1}} {{lt 2 1}}", d.clone()), "true false");
        assert_eq!(
            r(
                "{{slice .Name 1 3}} {{slice .Name 2}} {{slice .Tags 1}}",
                d.clone()
            ),
            "er rth [b c]"
        );
        assert!(render_err("{{lt .Name 1}}", d.clone()).contains("incompatible types"));
        assert!(render_err("{{slice .Name 2 9}}", d).contains("out of range"));
    }

    fn parse_err(src: &str) -> String {
        parse(src).expect_err("expected parse error").to_string()
    }

    fn render_err(src: &str, data: Value) -> String {
        parse(src)
            .unwrap()
            .render(&data)
            .expect_err("expected render error")
            .to_string()
    }

    #[test]
    fn literal_text() {
        assert_eq!(r("hello world", json!({})), "hello world");
        assert_eq!(r("", json!({})), "");
        assert_eq!(r("a { b } c", json!({})), "a { b } c");
    }

    #[test]
    fn fields_and_dot() {
        let d = json!({"Name": "web", "ID": "abc", "Count": 3, "On": true});
        assert_eq!(
            r("{{.Name}} {{.ID}} {{.Count}} {{.On}}", d),
            "web abc 3 true"
        );
        assert_eq!(r("{{.}}", json!("plain")), "plain");
        assert_eq!(r("{{ .Name }}", json!({"Name": "x"})), "x");
    }

    #[test]
    fn nested_fields_and_root_var() {
        let d = json!({"Config": {"Image": "alpine", "Labels": {"a": "b"}}});
        assert_eq!(r("{{.Config.Image}}", d.clone()), "alpine");
        assert_eq!(r("{{$.Config.Image}}", d.clone()), "alpine");
        assert_eq!(r("{{.Config.Labels}}", d), "map[a:b]");
    }

    #[test]
    fn missing_and_null() {
        assert_eq!(r("{{.Nope}}", json!({})), "<no value>");
        assert_eq!(r("{{.A.B}}", json!({})), "<no value>");
        assert_eq!(r("{{.N}}", json!({"N": null})), "<nil>");
        assert_eq!(r("{{.L}}", json!({"L": ["a", "b"]})), "[a b]");
    }

    #[test]
    fn json_func() {
        let d = json!({"A": {"x": 1, "y": [true, null]}, "S": "q\"<"});
        assert_eq!(r("{{json .A}}", d.clone()), r#"{"x":1,"y":[true,null]}"#);
        assert_eq!(r("{{json .S}}", d.clone()), r#""q\"<""#);
        assert_eq!(r("{{json .}}", json!({"k": "v"})), r#"{"k":"v"}"#);
        assert_eq!(r("{{json .Missing}}", d), "null");
    }

    #[test]
    fn join_func() {
        assert_eq!(
            r(r#"{{join .Names ", "}}"#, json!({"Names": ["a", "b", "c"]})),
            "a, b, c"
        );
        assert_eq!(r(r#"{{join .Names ","}}"#, json!({"Names": []})), "");
    }

    #[test]
    fn upper_lower_title() {
        let d = json!({"S": "hello big-World foo_bar"});
        assert_eq!(r("{{upper .S}}", d.clone()), "HELLO BIG-WORLD FOO_BAR");
        assert_eq!(r("{{lower .S}}", d.clone()), "hello big-world foo_bar");
        assert_eq!(r("{{title .S}}", d), "Hello Big-World Foo_bar");
    }

    #[test]
    fn split_func() {
        let d = json!({"S": "a:b:c"});
        assert_eq!(r(r#"{{split .S ":"}}"#, d.clone()), "[a b c]");
        assert_eq!(r(r#"{{index (split .S ":") 1}}"#, d.clone()), "b");
        assert_eq!(r(r#"{{join (split .S ":") "-"}}"#, d.clone()), "a-b-c");
        assert_eq!(r(r#"{{len (split .S ":")}}"#, d), "3");
    }

    #[test]
    fn truncate_func() {
        let d = json!({"ID": "0123456789abcdef"});
        assert_eq!(r("{{truncate .ID 12}}", d.clone()), "0123456789ab");
        assert_eq!(r("{{truncate .ID 100}}", d.clone()), "0123456789abcdef");
        assert_eq!(r("{{truncate .ID 0}}", d), "");
    }

    #[test]
    fn pad_func() {
        assert_eq!(r("[{{pad .S 2 3}}]", json!({"S": "x"})), "[  x   ]");
        assert_eq!(r("[{{pad .S 2 3}}]", json!({"S": ""})), "[]");
    }

    #[test]
    fn print_and_println() {
        assert_eq!(r(r#"{{print "a" "b" 1 2 "c"}}"#, json!({})), "ab1 2c");
        assert_eq!(r(r#"{{println "a" 1}}"#, json!({})), "a 1\n");
        assert_eq!(r("{{println}}", json!({})), "\n");
        assert_eq!(r("{{.Name | println}}", json!({"Name": "n"})), "n\n");
    }

    #[test]
    fn len_func() {
        let d = json!({"L": [1, 2], "M": {"a": 1}, "S": "héllo"});
        assert_eq!(r("{{len .L}} {{len .M}} {{len .S}}", d), "2 1 6");
        assert!(render_err("{{len .N}}", json!({"N": 1})).contains("len of number"));
    }

    #[test]
    fn index_func() {
        let d = json!({"Labels": {"com.x": "y"}, "L": ["a", "b"], "Nest": {"a": {"b": "deep"}}});
        assert_eq!(r(r#"{{index .Labels "com.x"}}"#, d.clone()), "y");
        assert_eq!(r(r#"{{index .Labels "nope"}}"#, d.clone()), "<no value>");
        assert_eq!(r("{{index .L 1}}", d.clone()), "b");
        assert_eq!(r(r#"{{index .Nest "a" "b"}}"#, d.clone()), "deep");
        assert!(render_err("{{index .L 5}}", d).contains("out of range"));
    }

    #[test]
    fn pipelines() {
        let d = json!({"Name": "Web"});
        assert_eq!(r("{{.Name | upper}}", d.clone()), "WEB");
        assert_eq!(r("{{.Name | upper | lower}}", d.clone()), "web");
        assert_eq!(r(r#"{{split "a:b" ":" | len}}"#, d.clone()), "2");
        assert_eq!(r("{{.Name | lower | title}}", d), "Web");
    }

    #[test]
    fn literals() {
        assert_eq!(r(r#"{{"a\tb\n\"c\" \u00e9"}}"#, json!({})), "a\tb\n\"c\" é");
        assert_eq!(r("{{`raw\\n`}}", json!({})), "raw\\n");
        assert_eq!(
            r("{{42}} {{-7}} {{1.5}} {{true}}", json!({})),
            "42 -7 1.5 true"
        );
    }

    #[test]
    fn if_else_truthiness() {
        let t = parse("{{if .X}}yes{{else}}no{{end}}").unwrap();
        for (x, want) in [
            (json!(false), "no"),
            (json!(0), "no"),
            (json!(""), "no"),
            (json!(null), "no"),
            (json!([]), "no"),
            (json!({}), "no"),
            (json!(true), "yes"),
            (json!(2), "yes"),
            (json!("s"), "yes"),
            (json!([0]), "yes"),
            (json!({"a": 1}), "yes"),
        ] {
            assert_eq!(t.render(&json!({"X": x})).unwrap(), want, "{x}");
        }
        assert_eq!(t.render(&json!({})).unwrap(), "no");
        assert_eq!(r("{{if .X}}only{{end}}", json!({"X": 0})), "");
    }

    #[test]
    fn else_if_and_comparisons() {
        let t =
            parse(r#"{{if eq .S "running"}}R{{else if eq .S "exited" "dead"}}X{{else}}?{{end}}"#)
                .unwrap();
        assert_eq!(t.render(&json!({"S": "running"})).unwrap(), "R");
        assert_eq!(t.render(&json!({"S": "dead"})).unwrap(), "X");
        assert_eq!(t.render(&json!({"S": "paused"})).unwrap(), "?");
        assert_eq!(
            r(
                "{{if not .A}}n{{end}}{{if and .A .B}}ab{{end}}{{or .A .B}}",
                json!({"A": 0, "B": "b"})
            ),
            "nb"
        );
        assert_eq!(r("{{ne 1 2}} {{eq 1 1}}", json!({})), "true true");
    }

    #[test]
    fn with_block() {
        assert_eq!(
            r(
                "{{with .C}}{{.Name}}{{else}}none{{end}}",
                json!({"C": {"Name": "n"}})
            ),
            "n"
        );
        assert_eq!(
            r("{{with .C}}{{.Name}}{{else}}none{{end}}", json!({})),
            "none"
        );
    }

    #[test]
    fn range_list() {
        let d = json!({"L": ["a", "b", "c"]});
        assert_eq!(r("{{range .L}}[{{.}}]{{end}}", d.clone()), "[a][b][c]");
        assert_eq!(
            r("{{range $i, $e := .L}}{{$i}}={{$e}};{{end}}", d.clone()),
            "0=a;1=b;2=c;"
        );
        assert_eq!(r("{{range $e := .L}}{{$e}}{{end}}", d), "abc");
    }

    #[test]
    fn range_map_else_and_root() {
        let d = json!({"M": {"b": 2, "a": 1}, "P": "p", "E": []});
        assert_eq!(
            r("{{range $k, $v := .M}}{{$k}}:{{$v}},{{end}}", d.clone()),
            "a:1,b:2,"
        );
        assert_eq!(r("{{range .E}}x{{else}}empty{{end}}", d.clone()), "empty");
        assert_eq!(r("{{range .Missing}}x{{end}}", d.clone()), "");
        assert_eq!(r("{{range .M}}{{$.P}}{{.}}{{end}}", d), "p1p2");
        assert!(render_err("{{range .S}}{{end}}", json!({"S": "str"})).contains("can't iterate"));
    }

    #[test]
    fn variables_and_parens() {
        assert_eq!(
            r("{{$n := .Name}}{{$n}}-{{$n | upper}}", json!({"Name": "a"})),
            "a-A"
        );
        assert_eq!(
            r(r#"{{upper (index .M "k")}}"#, json!({"M": {"k": "v"}})),
            "V"
        );
    }

    #[test]
    fn trim_markers_and_comments() {
        let d = json!({"L": ["a", "b"]});
        assert_eq!(r("x  {{- .L}}", d.clone()), "x[a b]");
        assert_eq!(r("{{range .L -}}\n  {{.}}\n{{- end}}", d.clone()), "ab");
        assert_eq!(r("a {{- /* note */ -}} b", d.clone()), "ab");
        assert_eq!(r("a{{/* note */}}b", d.clone()), "ab");
        assert_eq!(r("{{-3}}", d), "-3");
    }

    #[test]
    fn escaped_tab_and_newline_in_text() {
        assert_eq!(r(r"{{.A}}\t{{.B}}\n", json!({"A": 1, "B": 2})), "1\t2\n");
    }

    #[test]
    fn table_alignment() {
        let t = parse(r"table {{.ID}}\t{{.Name}}\t{{.Status}}").unwrap();
        assert!(t.is_table());
        let rows = vec![
            json!({"ID": "abc", "Name": "a-very-long-name", "Status": "Up"}),
            json!({"ID": "0123456789abc", "Name": "b", "Status": "Exited (0)"}),
        ];
        let mut headers = HashMap::new();
        headers.insert("ID".to_string(), "CONTAINER ID".to_string());
        let out = t.render_table(&rows, &headers).unwrap();
        let want = "\
CONTAINER ID    NAME               STATUS
abc             a-very-long-name   Up
0123456789abc   b                  Exited (0)
";
        assert_eq!(out, want);
    }

    #[test]
    fn table_header_functions_and_empty() {
        let t = parse("table {{.Name | upper}}\t{{join .Tags \",\"}}").unwrap();
        let out = t.render_table(&[], &HashMap::new()).unwrap();
        assert_eq!(out, "NAME      TAGS\n");
        let t = parse("table {{.A}}").unwrap();
        let out = t
            .render_table(&[json!({"A": "x"})], &HashMap::new())
            .unwrap();
        assert_eq!(out, "A\nx\n");
        assert!(!parse("{{.A}}").unwrap().is_table());
    }

    #[test]
    fn render_lines_rows() {
        let t = parse("{{.A}}").unwrap();
        let out = t.render_lines(&[json!({"A": 1}), json!({"A": 2})]).unwrap();
        assert_eq!(out, "1\n2\n");
    }

    #[test]
    fn special_formats() {
        let rows = vec![json!({"A": 1, "B": "x"}), json!({"A": 2, "B": "y"})];
        let h = HashMap::new();
        let def = parse(r"table {{.A}}\t{{.B}}").unwrap();
        let f = format("json").unwrap();
        assert!(matches!(f, Format::Json));
        assert_eq!(
            f.render(&rows, &h, &def).unwrap(),
            "{\"A\":1,\"B\":\"x\"}\n{\"A\":2,\"B\":\"y\"}\n"
        );
        assert!(matches!(format("table").unwrap(), Format::Table(None)));
        assert!(matches!(format("").unwrap(), Format::Table(None)));
        let f = format("table").unwrap();
        assert_eq!(
            f.render(&rows, &h, &def).unwrap(),
            "A         B\n1         x\n2         y\n"
        );
        let f = format(r"table {{.B}}").unwrap();
        assert!(matches!(&f, Format::Table(Some(t)) if t.is_table()));
        assert_eq!(f.render(&rows, &h, &def).unwrap(), "B\nx\ny\n");
        let f = format(" {{.B}} ").unwrap();
        assert!(matches!(f, Format::Template(_)));
        assert_eq!(f.render(&rows, &h, &def).unwrap(), "x\ny\n");
    }

    #[test]
    fn parse_errors() {
        let e = parse_err("abc {{.Name");
        assert!(
            e.contains("unclosed action") && e.starts_with("template: :1:5:"),
            "{e}"
        );
        let e = parse_err("{{.Name}");
        assert_eq!(e, r#"template: :1:8: unexpected "}" in operand"#);
        let e = parse_err("{{.Name }\n}}");
        assert!(
            e.contains(r#"unexpected "}" in operand"#) && e.starts_with("template: :1:9:"),
            "{e}"
        );
        let e = parse_err("{{frobnicate .X}}");
        assert!(e.contains(r#"function "frobnicate" not defined"#), "{e}");
        assert!(parse_err("{{if .X}}a").contains("missing {{end}}"));
        assert!(parse_err("a{{end}}").contains("unexpected {{end}}"));
        assert!(parse_err("{{}}").contains("missing value"));
        assert!(parse_err(r#"{{"abc}}"#).contains("unterminated quoted string"));
        assert!(parse_err("{{.A .B}}").contains("non-function"));
        assert!(parse_err("{{(upper .A}}").contains("unclosed left paren"));
        assert!(parse_err("{{template \"x\"}}").contains("not supported"));
        assert!(parse_err("line1\n{{.A | }}").starts_with("template: :2:"));
    }

    #[test]
    fn bad_args_errors() {
        let e = render_err("{{join .L}}", json!({"L": []}));
        assert!(
            e.contains("wrong number of args for join: want 2 got 1"),
            "{e}"
        );
        let e = render_err(r#"{{truncate .S "x"}}"#, json!({"S": "abc"}));
        assert!(e.contains("expected int"), "{e}");
        let e = render_err("{{upper .L}}", json!({"L": [1]}));
        assert!(e.contains("expected string"), "{e}");
        let e = render_err("{{.S.Field}}", json!({"S": "x"}));
        assert!(
            e.contains("can't evaluate field Field in type string"),
            "{e}"
        );
        let e = render_err("{{.A | .B}}", json!({}));
        assert!(e.contains("non-function"), "{e}");
        let e = render_err("{{$nope}}", json!({}));
        assert!(e.contains("undefined variable"), "{e}");
    }

    #[test]
    fn never_panics_on_garbage() {
        let pieces = [
            "{{", "}}", "{{- ", " -}}", ".", "A", "$", "$x", ":=", ",", "|", "(", ")", "\"", "\\",
            "`", "-", "1", "if", "else", "end", "range", "with", "upper", "index", "json", " ",
            "\n", "é", "/*", "*/", "\\t", "table ",
        ];
        let data = json!({"A": {"B": [1, "x"]}, "L": ["a"], "x": null});
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20000 {
            let mut src = String::new();
            for _ in 0..(seed % 12) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                src.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            if let Ok(t) = parse(&src) {
                let _ = t.render(&data);
                let _ = t.render_table(std::slice::from_ref(&data), &HashMap::new());
            }
        }
    }
}
