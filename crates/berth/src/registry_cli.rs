//! `pull`, `push`, `login`, `logout`, and the pull that `run`/`create` do
//! for a missing image. Output follows Docker's: per-layer lines, a
//! digest and a status; progress bars per layer on a terminal only.

use anyhow::Context as _;
use berth_engine::pull::{PullEvent, PullOptions, TransferError};
use berth_engine::push::PushEvent;
use berth_engine::ImageStore;
use berth_image::digest::Digest;
use berth_image::reference::{self, Reference};
use berth_registry::creds::{self, DockerConfig};
use berth_registry::{Client, Credential, Settings};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Download all tagged images in the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// Set platform if server is multi-platform capable (os/arch[/variant])
    #[arg(long)]
    pub platform: Option<String>,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
    /// Skip image verification (accepted for compatibility)
    #[arg(long = "disable-content-trust", default_value_t = true, hide = true)]
    pub disable_content_trust: bool,
    /// Image name: NAME[:TAG|@DIGEST]
    pub name: String,
}

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Push all tags of the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
    /// Image name: NAME[:TAG]
    pub name: String,
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (insecure: prefer --password-stdin)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// Registry server (default: Docker Hub)
    pub server: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// Registry server (default: Docker Hub)
    pub server: Option<String>,
}

/// A failed registry operation as Docker prints it (exit 1).
fn fail(e: impl std::fmt::Display) -> anyhow::Result<i32> {
    eprintln!("Error response from daemon: {e}");
    Ok(1)
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

/// A client for `domain`, with its stored credentials.
pub fn connect(domain: &str, settings: &Settings) -> anyhow::Result<Arc<Client>> {
    let config = DockerConfig::load(&creds::config_dir())?;
    let cred = config.get(&berth_registry::credential_key(domain))?;
    Ok(Arc::new(Client::connect(domain, cred, settings)?))
}

/// Per-layer lines and bars for pull and push: bars on a terminal, lines
/// (`<id>: Pull complete`) otherwise; nothing when quiet.
struct Display {
    quiet: bool,
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<Digest, (ProgressBar, String)>>,
    to_stderr: bool,
}

impl Display {
    fn new(quiet: bool, to_stderr: bool) -> Display {
        let tty = if to_stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        let multi = (!quiet && tty).then(|| {
            MultiProgress::with_draw_target(if to_stderr {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::stdout()
            })
        });
        Display {
            quiet,
            multi,
            bars: Mutex::new(HashMap::new()),
            to_stderr,
        }
    }

    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(s);
            }
            None if self.to_stderr => eprintln!("{s}"),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{s}");
            }
        }
    }

    fn start(&self, d: &Digest, size: u64, what: &str) {
        let Some(m) = &self.multi else { return };
        let mut bar = ProgressBar::hidden();
        bar.set_length(size);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix}: {msg} [{bar:40}] {binary_bytes}/{binary_total_bytes}",
        ) {
            bar = bar.with_style(style.progress_chars("=> "));
        }
        // "Waiting" until its first bytes, as Docker shows it.
        let bar = m.add(
            bar.with_prefix(short(d).to_string())
                .with_message("Waiting"),
        );
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.insert(d.clone(), (bar, what.to_string()));
    }

    fn progress(&self, d: &Digest, n: u64) {
        if self.multi.is_none() {
            return;
        }
        let bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((b, what)) = bars.get(d) {
            if b.position() == 0 {
                b.set_message(what.clone());
            }
            b.inc(n);
        }
    }

    /// The layer's final line (its bar, if any, is replaced by it).
    fn done(&self, d: &Digest, status: &str) {
        let bar = {
            let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
            bars.remove(d)
        };
        if let Some((b, _)) = bar {
            b.finish_and_clear();
            if let Some(m) = &self.multi {
                m.remove(&b);
            }
        }
        self.line(&format!("{}: {status}", short(d)));
    }
}

fn parse_name(name: &str) -> anyhow::Result<Reference> {
    reference::parse(name).map_err(|e| anyhow::anyhow!("invalid reference format: {e}"))
}

fn platform(p: Option<&str>) -> anyhow::Result<Option<oci_spec::image::Platform>> {
    p.map(berth_image::manifest::parse_platform)
        .transpose()
        .map_err(Into::into)
}

/// Pull one reference, printing Docker's lines; the pulled image's
/// digest line and status are printed by the caller.
/// Docker's last lines of a pull: the digest and whether anything changed.
fn pull_summary(display: &Display, p: &berth_engine::pull::Pulled, r: &Reference) {
    display.line(&format!("Digest: {}", p.digest));
    let status = if p.changed {
        "Downloaded newer image for"
    } else {
        "Image is up to date for"
    };
    display.line(&format!("Status: {status} {}", r.familiar()));
}

fn pull_one(
    store: &mut ImageStore,
    client: &Arc<Client>,
    r: &Reference,
    opts: &PullOptions,
    display: &Display,
) -> Result<berth_engine::pull::Pulled, TransferError> {
    let what = match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, t) => t.unwrap_or("latest").to_string(),
    };
    display.line(&format!("{what}: Pulling from {}", r.path()));
    let events = |e: PullEvent| match e {
        PullEvent::Exists(d) => display.done(&d, "Already exists"),
        PullEvent::Waiting(d, size) => display.start(&d, size, "Downloading"),
        PullEvent::Progress(d, n) => display.progress(&d, n),
        PullEvent::Complete(d) => display.done(&d, "Pull complete"),
    };
    berth_engine::pull::pull(store, client, r, opts, &events)
}

/// `berth pull`.
pub fn pull(store: &mut ImageStore, a: &PullArgs) -> anyhow::Result<i32> {
    let _ = a.disable_content_trust;
    let mut r = parse_name(&a.name)?;
    let settings = Settings::load().map_err(anyhow::Error::msg)?;
    let opts = PullOptions {
        platform: platform(a.platform.as_deref())?,
        downloads: settings.downloads,
    };
    let display = Display::new(a.quiet, false);
    let explicit_tag = a.name.contains(':')
        && !a
            .name
            .rsplit_once(':')
            .is_some_and(|(_, t)| t.contains('/'))
        || r.digest().is_some();
    if a.all_tags && (explicit_tag || r.digest().is_some()) {
        return fail("tag can't be used with --all-tags/-a");
    }
    let client = match connect(r.domain(), &settings) {
        Ok(c) => c,
        Err(e) => return fail(format!("{e:#}")),
    };
    if a.all_tags {
        let tags = match client.list_tags(r.path()) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        for t in tags {
            let tagged = r.with_tag(&t)?;
            if let Err(e) = pull_one(store, &client, &tagged, &opts, &display) {
                return fail(e);
            }
        }
        let repo = r.without_tag();
        display.line(&format!(
            "Status: Downloaded newer image for {}",
            repo.familiar_repository()
        ));
        println!("{}", repo.repository());
        return Ok(0);
    }
    if !explicit_tag && r.digest().is_none() {
        display.line("Using default tag: latest");
        r = r.with_tag("latest")?;
    }
    match pull_one(store, &client, &r, &opts, &display) {
        Ok(p) => {
            pull_summary(&display, &p, &r);
            println!("{r}");
            Ok(0)
        }
        Err(e) => fail(e),
    }
}

/// The pull `run`/`create` do: Docker's lines on stderr.
pub fn pull_for_run(
    store: &mut ImageStore,
    name: &str,
    platform_flag: Option<&str>,
) -> anyhow::Result<()> {
    let r = parse_name(name)?;
    let settings = Settings::load().map_err(anyhow::Error::msg)?;
    let opts = PullOptions {
        platform: platform(platform_flag)?,
        downloads: settings.downloads,
    };
    let display = Display::new(false, true);
    let client = connect(r.domain(), &settings)?;
    let p = pull_one(store, &client, &r, &opts, &display)?;
    pull_summary(&display, &p, &r);
    Ok(())
}

/// `berth push`.
pub fn push(store: &mut ImageStore, a: &PushArgs) -> anyhow::Result<i32> {
    let r = parse_name(&a.name)?;
    if r.digest().is_some() {
        return fail("cannot push a digest reference");
    }
    let settings = Settings::load().map_err(anyhow::Error::msg)?;
    let display = Display::new(a.quiet, false);
    let has_tag = a
        .name
        .rsplit_once(':')
        .is_some_and(|(_, t)| !t.contains('/'));
    let refs: Vec<Reference> = if a.all_tags {
        if has_tag {
            return fail("tag can't be used with --all-tags/-a");
        }
        let repo = r.without_tag().to_string();
        let mut tags: Vec<Reference> = Vec::new();
        for img in store.list()? {
            for t in img.tags {
                if let Ok(tr) = reference::parse(&t) {
                    if tr.without_tag().to_string() == repo && tr.digest().is_none() {
                        tags.push(tr);
                    }
                }
            }
        }
        tags.sort();
        if tags.is_empty() {
            return fail(format!(
                "An image does not exist locally with the tag: {}",
                r.familiar_repository()
            ));
        }
        tags
    } else {
        if !has_tag {
            display.line("Using default tag: latest");
        }
        vec![r.clone()]
    };
    display.line(&format!(
        "The push refers to repository [{}]",
        r.without_tag().familiar_repository()
    ));
    let client = match connect(r.domain(), &settings) {
        Ok(c) => c,
        Err(e) => return fail(format!("{e:#}")),
    };
    for tr in refs {
        let layers = Mutex::new(std::collections::HashSet::new());
        let is_layer = |d: &Digest| layers.lock().unwrap_or_else(|p| p.into_inner()).contains(d);
        let events = |e: PushEvent| match e {
            PushEvent::Preparing {
                digest,
                size,
                layer: true,
            } => {
                layers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(digest.clone());
                display.start(&digest, size, "Pushing");
            }
            PushEvent::Exists(d) if is_layer(&d) => display.done(&d, "Layer already exists"),
            PushEvent::Mounted(d, from) if is_layer(&d) => {
                display.done(&d, &format!("Mounted from {from}"))
            }
            PushEvent::Progress(d, n) => display.progress(&d, n),
            PushEvent::Pushed(d) if is_layer(&d) => display.done(&d, "Pushed"),
            _ => {}
        };
        match berth_engine::push::push(store, &client, &tr, settings.uploads, &events) {
            Ok(p) => {
                let line = format!(
                    "{}: digest: {} size: {}",
                    tr.tag().unwrap_or("latest"),
                    p.digest,
                    p.size
                );
                if a.quiet {
                    println!("{}", tr.familiar());
                } else {
                    display.line(&line);
                }
            }
            Err(e) => return fail(e),
        }
    }
    Ok(0)
}

/// The registry a `login`/`logout` argument names: its domain and the key
/// its credentials are stored under.
fn server_key(server: Option<&str>) -> (String, String) {
    let domain = match server {
        None => reference::DEFAULT_DOMAIN.to_string(),
        Some(s) => {
            let s = s
                .strip_prefix("https://")
                .or_else(|| s.strip_prefix("http://"))
                .unwrap_or(s);
            let host = s.split('/').next().unwrap_or(s);
            if host == "index.docker.io" || host == "registry-1.docker.io" {
                reference::DEFAULT_DOMAIN.to_string()
            } else {
                host.to_string()
            }
        }
    };
    let key = berth_registry::credential_key(&domain);
    (domain, key)
}

fn prompt(label: &str) -> anyhow::Result<String> {
    eprint!("{label}");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Read a password from the terminal without echo.
fn prompt_password() -> anyhow::Result<String> {
    use nix::sys::termios;
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(termios::LocalFlags::ECHO);
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &quiet);
    }
    let r = prompt("Password: ");
    if let Some(t) = &saved {
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, t);
    }
    eprintln!();
    r
}

/// `berth login`.
pub fn login(a: &LoginArgs) -> anyhow::Result<i32> {
    let (domain, key) = server_key(a.server.as_deref());
    let dir = creds::config_dir();
    let mut config = DockerConfig::load(&dir)?;
    if a.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    if a.password_stdin && a.password.is_some() {
        return fail("--password and --password-stdin are mutually exclusive");
    }
    let interactive = std::io::stdin().is_terminal();
    let username = match &a.username {
        Some(u) => u.clone(),
        None if a.password_stdin => {
            return fail("Must provide --username with --password-stdin");
        }
        None if interactive => prompt("Username: ")?,
        None => {
            // Stored credentials are checked again, as Docker does.
            match config.get(&key)? {
                Some(c) => return finish_login(&domain, &key, &mut config, c, false),
                None => return fail("Cannot perform an interactive login from a non TTY device"),
            }
        }
    };
    let password = if let Some(p) = &a.password {
        p.clone()
    } else if a.password_stdin {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if interactive {
        prompt_password()?
    } else {
        return fail("Cannot perform an interactive login from a non TTY device");
    };
    if username.is_empty() {
        return fail("Username is required");
    }
    if password.is_empty() {
        return fail("Password is required");
    }
    let c = Credential {
        username,
        secret: password,
    };
    finish_login(&domain, &key, &mut config, c, true)
}

fn finish_login(
    domain: &str,
    key: &str,
    config: &mut DockerConfig,
    cred: Credential,
    store: bool,
) -> anyhow::Result<i32> {
    let settings = Settings::load().map_err(anyhow::Error::msg)?;
    let client = match Client::connect(domain, Some(cred.clone()), &settings) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = client.check_login() {
        return fail(format!("login attempt to {} failed: {e}", client.base()));
    }
    if store {
        config
            .store(key, &cred)
            .and_then(|()| config.save())
            .with_context(|| "storing the credentials")?;
    }
    println!("Login Succeeded");
    Ok(0)
}

/// `berth logout`.
pub fn logout(a: &LogoutArgs) -> anyhow::Result<i32> {
    let (_, key) = server_key(a.server.as_deref());
    let mut config = DockerConfig::load(&creds::config_dir())?;
    if !config.erase(&key)? {
        println!("Not logged in to {key}");
        return Ok(0);
    }
    config.save()?;
    println!("Removing login credentials for {key}");
    Ok(0)
}
