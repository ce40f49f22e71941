//! Docker image references (`busybox`, `user/app:v1`,
//! `registry.example.com:5000/ns/name:tag@sha256:…`), parsed with Docker's
//! grammar and normalised the way Docker normalises them:
//!
//! ```text
//! reference      := name [ ":" tag ] [ "@" digest ]
//! name           := [ domain "/" ] path
//! domain         := host [ ":" port ]
//! host           := domain-name | "[" ipv6 "]"
//! domain-name    := component ( "." component )*     component: [a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?
//! path           := path-component ( "/" path-component )*
//! path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag            := [\w][\w.-]{0,127}
//! ```
//!
//! The first component of a name is a domain when it contains `.` or `:`, is
//! `localhost`, or has an uppercase letter (current Docker's rule); otherwise
//! the name is on Docker Hub, `docker.io`, and a one-component name there is
//! an official image under `library/`. `index.docker.io` is an old name of
//! `docker.io`. A reference without a tag or a digest gets the tag `latest`.

use crate::digest::Digest;
use std::fmt;
use std::str::FromStr;

/// Docker Hub's domain in normalised references.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The tag a reference gets when it has neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// The longest repository path Docker accepts (the domain does not count).
pub const PATH_MAX: usize = 255;
/// The longest tag.
pub const TAG_MAX: usize = 128;

const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";

/// Why a reference was refused. Messages follow Docker's wording, which
/// scripts match on (`invalid reference format…`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format: {input:?}: {why}")]
    Format { input: String, why: String },
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    #[error("invalid reference format: repository name ({0}) must not be more than {PATH_MAX} characters")]
    TooLong(String),
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexName(String),
    #[error("invalid tag format: {0:?}")]
    Tag(String),
}

/// A normalised image reference: always a domain and a path, a tag unless
/// the reference was given only with a digest, and maybe a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The registry: `docker.io`, `localhost:5000`, `[::1]:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path in the registry: `library/busybox`, `user/app`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Whether the image lives on Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        self.domain == DEFAULT_DOMAIN
    }

    /// `docker.io/library/busybox`: domain and path, no tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository as Docker shows it: `busybox`, `user/app`,
    /// `localhost:5000/x`.
    pub fn familiar_repository(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.repository();
        }
        match self.path.strip_prefix(OFFICIAL_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_string(),
            _ => self.path.clone(),
        }
    }

    /// The whole reference as Docker shows it: `busybox:latest`,
    /// `user/app:v1`, `localhost:5000/x:1`, `busybox@sha256:…`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_repository();
        self.push_tag_and_digest(&mut s);
        s
    }

    /// This reference with `tag` (validated); a digest is kept.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError::Tag(tag.to_string()));
        }
        Ok(Reference {
            tag: Some(tag.to_string()),
            ..self.clone()
        })
    }

    /// This reference without its tag; a digest is kept. Without a digest
    /// the result names the repository alone.
    pub fn without_tag(&self) -> Reference {
        Reference {
            tag: None,
            ..self.clone()
        }
    }

    /// This reference pinned to `digest`; a tag is kept.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// This reference without its digest; a tag is kept.
    pub fn without_digest(&self) -> Reference {
        Reference {
            digest: None,
            ..self.clone()
        }
    }

    fn push_tag_and_digest(&self, s: &mut String) {
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(&digest.to_string());
        }
    }
}

impl fmt::Display for Reference {
    /// The full normalised form: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.repository();
        self.push_tag_and_digest(&mut s);
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        parse(s)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Reference, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Parse and normalise a reference the way `docker pull`, `docker run` and
/// `docker tag` do.
pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
    let fail = |why: String| ReferenceError::Format {
        input: s.to_string(),
        why,
    };
    if is_hex(s, 64) {
        return Err(ReferenceError::HexName(s.to_string()));
    }
    if s.is_empty() {
        return Err(fail("it is empty".into()));
    }

    let (domain, rest) = split_domain(s);

    // The repository path is what precedes the digest and the tag (no
    // component of the path may hold `@` or `:`).
    let (name_and_tag, digest) = match rest.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (rest.as_str(), None),
    };
    let (path, tag) = match name_and_tag.split_once(':') {
        Some((p, t)) => (p, Some(t)),
        None => (name_and_tag, None),
    };
    if path.to_lowercase() != path {
        return Err(ReferenceError::Uppercase(path.to_string()));
    }

    if !valid_domain(domain) {
        return Err(fail(format!("invalid domain {domain:?}")));
    }
    if let Some(bad) = path.split('/').find(|c| !valid_path_component(c)) {
        return Err(fail(if bad.is_empty() {
            "empty path component".to_string()
        } else {
            format!("invalid path component {bad:?}")
        }));
    }
    if path.len() > PATH_MAX {
        return Err(ReferenceError::TooLong(path.to_string()));
    }
    if let Some(tag) = tag {
        if !valid_tag(tag) {
            return Err(fail(format!(
                "invalid tag {tag:?} (a tag is up to {TAG_MAX} letters, digits, '_', '.' and '-', not starting with '.' or '-')"
            )));
        }
    }
    let digest = match digest {
        Some(d) => Some(d.parse::<Digest>().map_err(|e| fail(e.to_string()))?),
        None => None,
    };
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, None) => Some(DEFAULT_TAG.to_string()),
        (None, Some(_)) => None,
    };
    Ok(Reference {
        domain: domain.to_string(),
        path: path.to_string(),
        tag,
        digest,
    })
}

/// Split a familiar name into its domain and the rest, Docker's way.
fn split_domain(s: &str) -> (&str, String) {
    let (domain, rest) = match s.split_once('/') {
        None => (DEFAULT_DOMAIN, s),
        Some(("localhost", rest)) => ("localhost", rest),
        Some((LEGACY_DEFAULT_DOMAIN, rest)) => (DEFAULT_DOMAIN, rest),
        Some((first, rest)) if first.contains(['.', ':']) || first.to_lowercase() != first => {
            (first, rest)
        }
        Some(_) => (DEFAULT_DOMAIN, s),
    };
    if domain == DEFAULT_DOMAIN && !rest.contains('/') {
        (domain, format!("{OFFICIAL_PREFIX}{rest}"))
    } else {
        (domain, rest.to_string())
    }
}

/// `host[:port]` where host is a dotted domain name or a bracketed IPv6
/// address.
fn valid_domain(d: &str) -> bool {
    let (host_ok, port) = if let Some(v6) = d.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return false;
        };
        let addr_ok = !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (addr_ok, port)
    } else {
        let (host, port) = match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        };
        (host.split('.').all(valid_domain_component), port)
    };
    let port_ok = match port {
        Some(p) => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    };
    host_ok && port_ok
}

fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        }
        _ => false,
    }
}

/// `[a-z0-9]+ ((. | _ | __ | -+) [a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        // A run of lowercase letters and digits…
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // …then one separator.
        let sep_start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    match b.first() {
        Some(&first) => {
            b.len() <= TAG_MAX
                && word(first)
                && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
        }
        None => false,
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` can name an image by ID: a full ID or an ID prefix, as 1 to 64
/// lowercase hex characters, optionally after `sha256:` (`docker rmi 1a2b3c`).
///
/// Many short hex strings are also valid names (`abc` is
/// `docker.io/library/abc`); Docker looks a string up as a name first and as
/// an ID prefix only when no image has that name.
pub fn looks_like_id(s: &str) -> bool {
    id_hex(s).is_some()
}

/// The hex part of an image ID or ID prefix (`sha256:` removed), if `s`
/// looks like one (see [`looks_like_id`]).
pub fn id_hex(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    let ok = !hex.is_empty()
        && hex.len() <= 64
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some(hex)
}

/// Whether `s` is a full image ID: 64 lowercase hex characters, optionally
/// after `sha256:`.
pub fn is_full_id(s: &str) -> bool {
    id_hex(s).is_some_and(|h| h.len() == 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// (input, Some((normalised, familiar))) for valid inputs, None for
    /// invalid ones.
    #[rustfmt::skip]
    fn table() -> Vec<(String, Option<(String, String)>)> {
        let ok = |i: &str, n: &str, f: &str| (i.to_string(), Some((n.to_string(), f.to_string())));
        let bad = |i: &str| (i.to_string(), None);
        let long_path = "a".repeat(PATH_MAX - OFFICIAL_PREFIX.len());
        let too_long_path = "a".repeat(PATH_MAX - OFFICIAL_PREFIX.len() + 1);
        let long_tag = "t".repeat(TAG_MAX);
        vec![
            // Docker Hub, official images.
            ok("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
            ok("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
            ok("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
            ok("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
            ok("docker.io/library/busybox:glibc", "docker.io/library/busybox:glibc", "busybox:glibc"),
            ok("index.docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
            ok("index.docker.io/library/debian:12", "docker.io/library/debian:12", "debian:12"),
            ok(&format!("busybox@{D}"), &format!("docker.io/library/busybox@{D}"), &format!("busybox@{D}")),
            ok(&format!("busybox:1@{D}"), &format!("docker.io/library/busybox:1@{D}"), &format!("busybox:1@{D}")),
            ok("192.168.0.1", "docker.io/library/192.168.0.1:latest", "192.168.0.1:latest"),
            ok("192.168.0.1:80", "docker.io/library/192.168.0.1:80", "192.168.0.1:80"),
            ok("localhost", "docker.io/library/localhost:latest", "localhost:latest"),
            ok("localhost:5000", "docker.io/library/localhost:5000", "localhost:5000"),
            ok("library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
            ok(&long_path, &format!("docker.io/library/{long_path}:latest"), &format!("{long_path}:latest")),
            ok(&format!("docker.io/{HEX}"), &format!("docker.io/library/{HEX}:latest"), &format!("{HEX}:latest")),
            // Docker Hub, user images.
            ok("user/app", "docker.io/user/app:latest", "user/app:latest"),
            ok("user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
            ok("docker.io/user/app:v1.0-rc_1", "docker.io/user/app:v1.0-rc_1", "user/app:v1.0-rc_1"),
            ok("user/app/sub", "docker.io/user/app/sub:latest", "user/app/sub:latest"),
            ok("a/b:Tag_With.Upper-Case", "docker.io/a/b:Tag_With.Upper-Case", "a/b:Tag_With.Upper-Case"),
            ok("a/b:_x", "docker.io/a/b:_x", "a/b:_x"),
            ok(&format!("a/b:{long_tag}"), &format!("docker.io/a/b:{long_tag}"), &format!("a/b:{long_tag}")),
            // Separators inside path components.
            ok("x/a.b_c__d-e---f", "docker.io/x/a.b_c__d-e---f:latest", "x/a.b_c__d-e---f:latest"),
            ok("a.b_c__d-e---f0", "docker.io/library/a.b_c__d-e---f0:latest", "a.b_c__d-e---f0:latest"),
            // Other registries.
            ok("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            ok("localhost:5000/x:1", "localhost:5000/x:1", "localhost:5000/x:1"),
            ok("localhost:5000/library/x", "localhost:5000/library/x:latest", "localhost:5000/library/x:latest"),
            ok("example.com/x", "example.com/x:latest", "example.com/x:latest"),
            ok("registry.example.com/ns/name:tag", "registry.example.com/ns/name:tag", "registry.example.com/ns/name:tag"),
            ok(&format!("registry.example.com/ns/name:tag@{D}"), &format!("registry.example.com/ns/name:tag@{D}"), &format!("registry.example.com/ns/name:tag@{D}")),
            ok("127.0.0.1:5000/docker/docker", "127.0.0.1:5000/docker/docker:latest", "127.0.0.1:5000/docker/docker:latest"),
            ok("my-registry:5000/x", "my-registry:5000/x:latest", "my-registry:5000/x:latest"),
            ok("[::1]:5000/x:1", "[::1]:5000/x:1", "[::1]:5000/x:1"),
            ok("[fc00::1]/docker", "[fc00::1]/docker:latest", "[fc00::1]/docker:latest"),
            ok("[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest", "[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest"),
            ok("Docker/docker", "Docker/docker:latest", "Docker/docker:latest"),
            ok("LOCALDOMAIN/debian", "LOCALDOMAIN/debian:latest", "LOCALDOMAIN/debian:latest"),
            ok("ghcr.io/o/r:1", "ghcr.io/o/r:1", "ghcr.io/o/r:1"),
            ok("docker.io.example.com/x", "docker.io.example.com/x:latest", "docker.io.example.com/x:latest"),
            // Invalid.
            bad(""),
            bad(":"),
            bad("busybox:"),
            bad("busybox@"),
            bad(":latest"),
            bad("/busybox"),
            bad("busybox/"),
            bad("a//b"),
            bad("docker///docker"),
            bad("a:b:c"),
            bad("a b"),
            bad("-docker"),
            bad("-docker/docker"),
            bad("-docker.io/docker/docker"),
            bad("docker-.io/x"),
            // Docker takes this one as a path with no domain at all; berth refuses it.
            bad("a_b.com/x"),
            bad("a..b"),
            bad("a___b"),
            bad("a.-b"),
            bad("a-"),
            bad("_a"),
            bad("busybox:.tag"),
            bad("busybox:-tag"),
            bad("busybox:a/b"),
            bad(&format!("a/b:{long_tag}t")),
            bad(&too_long_path),
            bad("https://github.com/docker/docker"),
            bad("[fc00::1]"),
            bad("[fc00::1]:5000"),
            bad("fc00::1:5000/debian"),
            bad("[fe80::1%eth0]:5000/debian"),
            bad("[2001:db8:3:4::192.0.2.33]:5000/debian"),
            bad("[]/x"),
            bad("localhost:/x"),
            bad("localhost:50a/x"),
            bad("busybox@sha256:abc"),
            bad(&format!("busybox@md5:{HEX}")),
            bad(&format!("busybox@{}", D.to_uppercase())),
            bad(HEX),
            bad("Busybox"),
            bad("docker/Docker"),
            bad("docker.io/docker/Docker"),
            bad("localhost:5000/Foo:1"),
            bad("bus\u{e9}box"),
            bad("bus\nbox"),
        ]
    }

    #[test]
    fn reference_table() {
        let t = table();
        assert!(t.len() >= 40);
        for (input, want) in t {
            let got = parse(&input);
            match (got, want) {
                (Ok(r), Some((norm, fam))) => {
                    assert_eq!(r.to_string(), norm, "normalised form of {input:?}");
                    assert_eq!(r.familiar(), fam, "familiar form of {input:?}");
                    // The normalised and the familiar forms parse back to the same reference.
                    assert_eq!(parse(&norm).as_ref(), Ok(&r), "{norm:?}");
                    assert_eq!(parse(&fam).as_ref(), Ok(&r), "{fam:?}");
                }
                (Err(e), None) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with("invalid "), "{input:?}: {msg}");
                    assert!(!msg.contains('\n'), "{input:?}: {msg}");
                }
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn components_and_forms() {
        let r = parse("busybox").unwrap();
        assert_eq!(r.domain(), "docker.io");
        assert_eq!(r.path(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.digest(), None);
        assert!(r.is_docker_hub());
        assert_eq!(r.repository(), "docker.io/library/busybox");
        assert_eq!(r.familiar_repository(), "busybox");

        let r = parse(&format!("localhost:5000/ns/x@{D}")).unwrap();
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.path(), "ns/x");
        assert_eq!(r.tag(), None, "no default tag beside a digest");
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert!(!r.is_docker_hub());
        assert_eq!(r.familiar_repository(), "localhost:5000/ns/x");

        assert_eq!(parse("user/app").unwrap().familiar_repository(), "user/app");
    }

    #[test]
    fn tag_and_digest_changes() {
        let r = parse("user/app:v1").unwrap();
        assert_eq!(
            r.with_tag("v2").unwrap().to_string(),
            "docker.io/user/app:v2"
        );
        assert_eq!(
            r.with_tag("bad tag"),
            Err(ReferenceError::Tag("bad tag".into()))
        );
        assert_eq!(
            r.with_tag(&"x".repeat(129)).unwrap_err().to_string(),
            format!("invalid tag format: {:?}", "x".repeat(129))
        );
        assert_eq!(r.without_tag().to_string(), "docker.io/user/app");
        assert_eq!(r.without_tag().familiar(), "user/app");
        let d: Digest = D.parse().unwrap();
        let pinned = r.with_digest(d.clone());
        assert_eq!(pinned.to_string(), format!("docker.io/user/app:v1@{D}"));
        assert_eq!(
            pinned.without_tag().to_string(),
            format!("docker.io/user/app@{D}")
        );
        assert_eq!(pinned.without_digest(), r);
        assert_eq!(
            pinned.without_tag().with_tag("v3").unwrap().digest(),
            Some(&d)
        );
    }

    #[test]
    fn error_messages_follow_docker() {
        assert_eq!(
            parse("Busybox").unwrap_err().to_string(),
            "invalid reference format: repository name (library/Busybox) must be lowercase"
        );
        assert_eq!(
            parse("docker/Docker:Tag").unwrap_err().to_string(),
            "invalid reference format: repository name (docker/Docker) must be lowercase"
        );
        assert_eq!(
            parse(HEX).unwrap_err().to_string(),
            format!("invalid repository name ({HEX}), cannot specify 64-byte hexadecimal strings")
        );
        let e = parse("a:b:c").unwrap_err().to_string();
        assert!(e.starts_with("invalid reference format: \"a:b:c\""), "{e}");
        let long = "a".repeat(300);
        assert_eq!(
            parse(&long).unwrap_err(),
            ReferenceError::TooLong(format!("library/{long}"))
        );
        // The domain does not count toward the length limit.
        let long_domain = format!("{}.example.com/x", "d".repeat(300));
        assert!(parse(&long_domain).is_ok());
        let e = parse("busybox@sha256:abc").unwrap_err().to_string();
        assert!(e.contains("sha256:abc"), "{e}");
    }

    #[test]
    fn string_forms() {
        let r: Reference = "user/app:v1".parse().unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"docker.io/user/app:v1\"");
        let back: Reference = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert!(serde_json::from_str::<Reference>("\"Bad\"").is_err());
    }

    #[test]
    fn ids() {
        for yes in ["1a2b3c", "a", HEX, D, "sha256:1a2b"] {
            assert!(looks_like_id(yes), "{yes}");
        }
        for no in [
            "",
            "sha256:",
            "1A2B",
            "xyz",
            "busybox",
            "1a2b:latest",
            "sha512:1a2b",
            &format!("{HEX}0"),
        ] {
            assert!(!looks_like_id(no), "{no}");
        }
        assert_eq!(id_hex("sha256:1a2b"), Some("1a2b"));
        assert!(is_full_id(HEX) && is_full_id(D));
        assert!(!is_full_id("1a2b3c"));
    }
}
