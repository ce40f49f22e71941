//! The container commands: `run`, `create`, `start`, `ps`, `logs`, `stop`,
//! `kill`, `rm`, `wait`, `inspect` — Docker's flags, output and exit codes.

use anyhow::Context;
use berth_engine::config::{
    ContainerConfig, Device, Mount, MountKind, RestartPolicy, Seccomp, Ulimit,
};
use berth_engine::containers::{self as ctr, state, ContainerError, Paths};
use berth_engine::db::ContainerRecord;
use berth_engine::monitor_proto::{self as proto, Kind};
use berth_engine::ImageStore;
use clap::Args;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

// The flags `create` and `run` share.
#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Print help (`-h` is --hostname, as in Docker)
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Assign a name to the container
    #[arg(long, allow_hyphen_values = true)]
    pub name: Option<String>,
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Set meta data on a container
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Restart policy to apply when a container exits (no, on-failure[:max-retries], always, unless-stopped)
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Automatically remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub resources: ResourceFlags,
    /// Ulimit options
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Mount a tmpfs directory
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Bind mount a volume
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount volumes from the specified container(s)
    #[arg(long = "volumes-from")]
    pub volumes_from: Vec<String>,
    /// Add Linux capabilities
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    pub privileged: bool,
    /// Security Options
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Add a host device to the container
    #[arg(long)]
    pub device: Vec<String>,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout", allow_hyphen_values = true)]
    pub stop_timeout: Option<i64>,
    /// Connect a container to a network (bridge, none, host, container:<name|id>, or a network's name)
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    #[command(flatten)]
    pub net: crate::networks_cli::NetFlags,
    /// Log driver options
    #[arg(long = "log-opt")]
    pub log_opt: Vec<String>,
    /// Log driver for the container (json-file)
    #[arg(long = "log-driver")]
    pub log_driver: Option<String>,
    /// Pull image before running ("always", "missing", "never")
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// The image to run
    pub image: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

// `run`'s own flags.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short, long)]
    pub detach: bool,
    /// Proxy received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    #[command(flatten)]
    pub create: CreateArgs,
}

fn bad(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ContainerError::Invalid(msg.into()))
}

/// Docker's sizes for memory: `512m`, `1g`, bytes.
fn memory_bytes(s: &str, what: &str) -> anyhow::Result<i64> {
    if s == "-1" {
        return Ok(-1);
    }
    ctr::parse_size(s).map(|n| n as i64).map_err(|_| {
        bad(format!(
            "invalid argument \"{s}\" for \"{what}\" flag: invalid size: '{s}'"
        ))
    })
}

fn parse_env_file(p: &PathBuf) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("open {}", p.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// `KEY` alone takes the caller's value (or is dropped), as Docker does.
fn resolve_env(entries: Vec<String>) -> Vec<String> {
    entries
        .into_iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e)
            } else {
                std::env::var(&e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect()
}

/// `-v`: `HOST:DEST[:OPTS]` (a bind when HOST is absolute), `NAME:DEST`
/// (a named volume) or `DEST` (an anonymous volume).
fn parse_bind(spec: &str) -> anyhow::Result<Mount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => return Err(bad(format!("invalid volume specification: '{spec}'"))),
    };
    if !dst.starts_with('/') {
        return Err(bad(format!(
            "invalid volume specification: '{spec}': invalid mount config for type \"bind\": invalid mount path: '{dst}' mount path must be absolute"
        )));
    }
    if dst == "/" {
        return Err(bad(format!(
            "invalid volume specification: '{spec}': invalid specification: destination can't be '/'"
        )));
    }
    let kind = if src.starts_with('/') {
        MountKind::Bind
    } else {
        MountKind::Volume
    };
    let mut m = Mount {
        kind,
        source: PathBuf::from(src),
        name: (kind == MountKind::Volume && !src.is_empty()).then(|| src.to_string()),
        destination: dst.to_string(),
        ..Default::default()
    };
    if let Some(n) = &m.name {
        berth_engine::volumes::validate_name(n).map_err(|e| bad(e.to_string()))?;
        m.source = PathBuf::new();
    }
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => m.read_only = true,
            "rw" => m.read_only = false,
            "nocopy" => m.no_copy = true,
            "z" | "Z" | "consistent" | "cached" | "delegated" => {}
            p if matches!(
                p,
                "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            ) =>
            {
                m.propagation = Some(p.to_string())
            }
            other => return Err(bad(format!("invalid mode: {other}"))),
        }
    }
    if m.kind == MountKind::Bind && !m.source.exists() {
        return Err(bad(format!(
            "invalid mount config for type \"bind\": bind source path does not exist: {}",
            m.source.display()
        )));
    }
    Ok(m)
}

fn parse_mount(spec: &str) -> anyhow::Result<Mount> {
    let mut m = Mount::default();
    let mut kind = "volume";
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "type" => kind = v,
            "source" | "src" => m.source = PathBuf::from(v),
            "volume-nocopy" => m.no_copy = v.is_empty() || v == "true" || v == "1",
            "target" | "destination" | "dst" => m.destination = v.to_string(),
            "readonly" | "ro" => m.read_only = v.is_empty() || v == "true" || v == "1",
            "bind-propagation" => m.propagation = Some(v.to_string()),
            "tmpfs-size" => m.options.push(format!("size={v}")),
            "tmpfs-mode" => m.options.push(format!("mode={v}")),
            _ => return Err(bad(format!("invalid field '{k}' must be a key=value pair"))),
        }
    }
    m.kind = match kind {
        "bind" => MountKind::Bind,
        "tmpfs" => MountKind::Tmpfs,
        "volume" => MountKind::Volume,
        other => return Err(bad(format!("invalid mount type: {other}"))),
    };
    if m.kind == MountKind::Volume {
        let name = m.source.to_string_lossy().into_owned();
        if !name.is_empty() {
            berth_engine::volumes::validate_name(&name).map_err(|e| bad(e.to_string()))?;
            m.name = Some(name);
        }
        m.source = PathBuf::new();
    }
    if !m.destination.starts_with('/') {
        return Err(bad(format!(
            "invalid mount config: mount path must be absolute: '{}'",
            m.destination
        )));
    }
    if m.kind == MountKind::Bind && !m.source.exists() {
        return Err(bad(format!(
            "invalid mount config for type \"bind\": bind source path does not exist: {}",
            m.source.display()
        )));
    }
    Ok(m)
}

fn parse_tmpfs(spec: &str) -> anyhow::Result<Mount> {
    let (dst, opts) = spec.split_once(':').unwrap_or((spec, ""));
    if !dst.starts_with('/') {
        return Err(bad(format!(
            "invalid tmpfs mount: path must be absolute: {dst}"
        )));
    }
    Ok(Mount {
        kind: MountKind::Tmpfs,
        destination: dst.to_string(),
        options: opts
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
        ..Default::default()
    })
}

fn parse_device(spec: &str) -> anyhow::Result<Device> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, ctr_path, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, c] if c.chars().all(|x| "rwm".contains(x)) => (*h, *h, *c),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(bad(format!("invalid device specification: {spec}"))),
    };
    if perms.is_empty() || !perms.chars().all(|x| "rwm".contains(x)) {
        return Err(bad(format!("invalid device mode: {perms}")));
    }
    Ok(Device {
        host: PathBuf::from(host),
        container: PathBuf::from(ctr_path),
        permissions: perms.to_string(),
    })
}

fn parse_ulimit(spec: &str) -> anyhow::Result<Ulimit> {
    let (name, vals) = spec
        .split_once('=')
        .ok_or_else(|| bad(format!("invalid ulimit argument: {spec}")))?;
    let (soft, hard) = vals.split_once(':').unwrap_or((vals, vals));
    let num = |v: &str| -> anyhow::Result<i64> {
        v.parse()
            .map_err(|_| bad(format!("invalid ulimit argument: {spec}")))
    };
    Ok(Ulimit {
        name: name.to_string(),
        soft: num(soft)?,
        hard: num(hard)?,
    })
}

fn parse_restart(s: &str) -> anyhow::Result<RestartPolicy> {
    let (name, n) = s.split_once(':').unwrap_or((s, ""));
    let max_retries = if n.is_empty() {
        0
    } else {
        n.parse()
            .map_err(|_| bad(format!("invalid restart policy format: {s}")))?
    };
    match name {
        "no" | "" if n.is_empty() => Ok(RestartPolicy::default()),
        "always" | "unless-stopped" if n.is_empty() => Ok(RestartPolicy {
            name: name.into(),
            max_retries: 0,
        }),
        "on-failure" => Ok(RestartPolicy {
            name: name.into(),
            max_retries,
        }),
        "always" | "unless-stopped" | "no" => Err(bad(format!(
            "invalid restart policy: maximum retry count cannot be used with restart policy '{name}'"
        ))),
        _ => Err(bad(format!("invalid restart policy: {s}"))),
    }
}

/// The flags as a container configuration.
pub fn config_from(a: &CreateArgs, detach: bool) -> anyhow::Result<ContainerConfig> {
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(parse_env_file(f)?);
    }
    env.extend(a.env.iter().cloned());
    let mut labels = std::collections::BTreeMap::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let mut mounts = Vec::new();
    for v in &a.volume {
        mounts.push(parse_bind(v)?);
    }
    for m in &a.mount {
        mounts.push(parse_mount(m)?);
    }
    for t in &a.tmpfs {
        mounts.push(parse_tmpfs(t)?);
    }
    let mut no_new_privileges = false;
    let mut seccomp = Seccomp::Default;
    for o in &a.security_opt {
        let (k, v) = o.split_once(['=', ':']).unwrap_or((o, ""));
        match k {
            "no-new-privileges" => no_new_privileges = v.is_empty() || v == "true",
            "seccomp" if v == "unconfined" => seccomp = Seccomp::Unconfined,
            "seccomp" => {
                let text = std::fs::read_to_string(v)
                    .map_err(|e| bad(format!("opening seccomp profile ({v}) failed: {e}")))?;
                seccomp = Seccomp::Custom(text);
            }
            "label" | "apparmor" => {}
            _ => return Err(bad(format!("Invalid --security-opt: {o:?}"))),
        }
    }
    let (network, net) = crate::networks_cli::parse(a.network.as_deref(), &a.net)?;
    let mut log_opts = std::collections::BTreeMap::new();
    for o in &a.log_opt {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| bad(format!("invalid key value pair format in log-opt: {o}")))?;
        if !matches!(
            k,
            "max-size" | "max-file" | "compress" | "labels" | "env" | "tag"
        ) {
            return Err(bad(format!(
                "unknown log opt '{k}' for json-file log driver"
            )));
        }
        log_opts.insert(k.to_string(), v.to_string());
    }
    if let Some(d) = &a.log_driver {
        if d != "json-file" {
            return Err(bad(format!(
                "logging driver {d} is not supported (only json-file)"
            )));
        }
    }
    if a.rm && !detach && a.restart != "no" {
        return Err(bad("Conflicting options: --restart and --rm"));
    }
    let restart = parse_restart(&a.restart)?;
    if a.rm && !restart.name.is_empty() {
        return Err(bad("Conflicting options: --restart and --rm"));
    }
    Ok(ContainerConfig {
        image: a.image.clone(),
        entrypoint: a.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        cmd: a.command.clone(),
        env: resolve_env(env),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        labels,
        tty: a.tty,
        open_stdin: a.interactive,
        read_only: a.read_only,
        privileged: a.privileged,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        no_new_privileges,
        seccomp,
        devices: a
            .device
            .iter()
            .map(|d| parse_device(d))
            .collect::<Result<_, _>>()?,
        mounts,
        resources: a.resources.limits()?,
        ulimits: a
            .ulimit
            .iter()
            .map(|u| parse_ulimit(u))
            .collect::<Result<_, _>>()?,
        init: a.init,
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        network,
        net,
        restart,
        auto_remove: a.rm,
        log_opts,
        volumes_from: a.volumes_from.clone(),
    })
}

/// An engine error as Docker's CLI prints it, with its exit code.
pub fn report(prefix: &str, e: &anyhow::Error) -> i32 {
    let code = e
        .downcast_ref::<ContainerError>()
        .map(ContainerError::exit_code)
        .unwrap_or(125);
    eprintln!("{prefix}Error response from daemon: {e:#}");
    code
}

/// `--pull`: `always` pulls, `missing` pulls an image the store lacks
/// (as Docker: "Unable to find image … locally"), `never` does not.
fn check_pull(store: &mut ImageStore, a: &CreateArgs) -> anyhow::Result<()> {
    match a.pull.as_str() {
        "never" => Ok(()),
        "always" => crate::registry_cli::pull_for_run(store, &a.image, None),
        "missing" => match store.find(&a.image) {
            Err(e) if e.is_not_found() && berth_image::reference::parse(&a.image).is_ok() => {
                let r = berth_image::reference::parse(&a.image)?;
                eprintln!("Unable to find image '{}' locally", r.familiar());
                crate::registry_cli::pull_for_run(store, &a.image, None)
            }
            _ => Ok(()),
        },
        other => Err(bad(format!(
            "invalid pull option: '{other}': must be one of \"always\", \"missing\" or \"never\""
        ))),
    }
}

/// `create`: prints the new container's ID.
pub fn create(store: &mut ImageStore, paths: &Paths, a: &CreateArgs) -> i32 {
    let r = (|| -> anyhow::Result<ContainerRecord> {
        check_pull(store, a)?;
        let cfg = config_from(a, true)?;
        Ok(ctr::create(store, paths, cfg, a.name.as_deref())?)
    })();
    match r {
        Ok(rec) => {
            println!("{}", rec.id);
            0
        }
        Err(e) => report("", &e),
    }
}

/// `run`.
pub fn run(
    store: &mut ImageStore,
    paths: &Paths,
    a: &RunArgs,
    mut monitor: Option<ctr::Monitor>,
) -> i32 {
    let created = (|| -> anyhow::Result<ContainerRecord> {
        let cfg = config_from(&a.create, a.detach)?;
        let id = ctr::new_id()?;
        // The monitor makes the cgroup meanwhile.
        if let Some(m) = monitor.as_mut() {
            m.prepare(&id, &cfg);
        }
        check_pull(store, &a.create)?;
        Ok(ctr::create_as(
            store,
            paths,
            cfg,
            a.create.name.as_deref(),
            id,
        )?)
    })();
    let rec = match created {
        Ok(r) => r,
        Err(e) => return report("berth: ", &e),
    };
    let attach = !a.detach;
    let started = match ctr::start_with(store, paths, rec.clone(), attach, monitor) {
        Ok(s) => s,
        Err(e) => {
            let code = e.exit_code();
            eprintln!("berth: Error response from daemon: {e}");
            if a.create.rm {
                let _ = ctr::remove_with_volumes(store, paths, rec, true, true);
            }
            return code;
        }
    };
    if a.detach {
        println!("{}", started.record.id);
        return 0;
    }
    let Some(mut conn) = started.attach else {
        return 0;
    };
    let keys = match parse_detach_keys(a.detach_keys.as_deref().unwrap_or("ctrl-p,ctrl-q")) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("berth: {e:#}");
            return 125;
        }
    };
    let (code, cleaned) =
        match attach_session_keys(&mut conn, &a.create, a.sig_proxy, true, Some(&keys)) {
            Ok(Some(end)) => (end.code, end.cleaned),
            // Detached: the container runs on (and a --rm one is removed by
            // its monitor when it exits).
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("berth: {e:#}");
                (125, false)
            }
        };
    // Record the exit now (the monitor has written it), and for --rm
    // remove the container ourselves. The connection stays open until
    // then: the monitor removes it only if we hang up without having done
    // so.
    let id = started.record.id.clone();
    if let Ok(rec) = ctr::wait_stopped(store, paths, &id, Some(std::time::Duration::from_secs(5))) {
        if a.create.rm {
            let _ = ctr::remove_exited(store, paths, rec, || monitor_cleaned(&mut conn) | cleaned);
        }
    }
    drop(conn);
    code
}

/// Wait until the monitor of a `run --rm` has removed the runtime's state
/// (it then shuts its side of the connection); true if it said so, and so
/// deletes the container's directory once we hang up.
fn monitor_cleaned(conn: &mut UnixStream) -> bool {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let mut cleaned = false;
    while let Ok(Some((kind, _))) = berth_engine::monitor_proto::read_frame(conn) {
        cleaned |= kind == berth_engine::monitor_proto::Kind::Cleaned;
    }
    cleaned
}

/// Talk to a container's monitor: stream its output to ours, our stdin to
/// it, forward signals and terminal size; returns its exit code.
/// Docker's detach key syntax: `ctrl-p,ctrl-q` (the default), `ctrl-@`,
/// `ctrl-[`, or single characters, comma-separated.
pub fn parse_detach_keys(s: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for k in s.split(',') {
        let b = if let Some(c) = k.strip_prefix("ctrl-") {
            match c.as_bytes() {
                [ch @ b'a'..=b'z'] => ch - b'a' + 1,
                [ch @ b'A'..=b'Z'] => ch - b'A' + 1,
                [b'@'] => 0,
                [b'['] => 27,
                [b'\\'] => 28,
                [b']'] => 29,
                [b'^'] => 30,
                [b'_'] => 31,
                _ => return Err(bad(format!("Invalid detach keys ({s}) provided"))),
            }
        } else if k.len() == 1 {
            k.as_bytes()[0]
        } else {
            return Err(bad(format!("Invalid detach keys ({s}) provided")));
        };
        out.push(b);
    }
    Ok(out)
}

/// The result of an attach session: the container's exit code, or `None`
/// when the user detached with the detach keys.
fn attach_session(
    conn: UnixStream,
    a: &CreateArgs,
    sig_proxy: bool,
    claim_removal: bool,
) -> anyhow::Result<i32> {
    let mut conn = conn;
    Ok(attach_session_keys(&mut conn, a, sig_proxy, claim_removal, None)?.map_or(0, |e| e.code))
}

/// How an attach session that saw the container exit ended.
struct SessionEnd {
    /// The container's exit code.
    code: i32,
    /// The monitor's `Cleaned` came with the exit (it may send it before
    /// we read the exit).
    cleaned: bool,
}

/// The end of a session at an exit frame: `Cleaned` may follow it in what
/// was read already.
fn session_end(payload: &[u8], dec: &mut proto::Decoder) -> SessionEnd {
    let (code, _) = proto::parse_exit(payload).unwrap_or((125, false));
    let cleaned = std::iter::from_fn(|| dec.next_frame().ok().flatten())
        .any(|(kind, _)| kind == Kind::Cleaned);
    SessionEnd { code, cleaned }
}

fn attach_session_keys(
    conn: &mut UnixStream,
    a: &CreateArgs,
    sig_proxy: bool,
    claim_removal: bool,
    detach_keys: Option<&[u8]>,
) -> anyhow::Result<Option<SessionEnd>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    // The monitor may be done already (a container that exits at once):
    // what it sent is still there to read, so failed writes are ignored.
    let _ = proto::write_frame(conn, Kind::Stream, &[]);
    if claim_removal && a.rm {
        let _ = proto::write_frame(conn, Kind::ClaimRemoval, &[]);
    }
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let stdin = std::io::stdin();
    let tty_in = a.tty && std::io::IsTerminal::is_terminal(&stdin);
    let _raw = if tty_in { RawTerminal::enter() } else { None };
    if tty_in {
        send_size(conn);
    }
    let mut stdin_open = a.interactive;
    let mut matched = 0usize;
    let mut pending: Vec<u8>;
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    let mut dec = proto::Decoder::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let mut fds = vec![
            PollFd::new(conn.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let re: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if !re[1].is_empty() {
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGWINCH {
                    send_size(conn);
                } else if sig_proxy {
                    let _ = proto::write_frame(conn, Kind::Signal, &sig.to_be_bytes());
                }
            }
        }
        if stdin_open && re.get(2).is_some_and(|r| !r.is_empty()) {
            let n = nix::unistd::read(&stdin, &mut buf).unwrap_or(0);
            // The detach keys (on a terminal) end the session, not the
            // container.
            let mut data = &buf[..n];
            if let (Some(keys), true) = (detach_keys, tty_in) {
                let mut forward = Vec::with_capacity(n);
                for &b in data {
                    if b == keys[matched] {
                        matched += 1;
                        if matched == keys.len() {
                            if !forward.is_empty() {
                                let _ = proto::write_frame(conn, Kind::Stdin, &forward);
                            }
                            return Ok(None);
                        }
                        continue;
                    }
                    forward.extend_from_slice(&keys[..matched]);
                    matched = 0;
                    forward.push(b);
                }
                pending = forward;
                data = &pending;
            }
            let sent = if n == 0 {
                stdin_open = false;
                proto::write_frame(conn, Kind::StdinEof, &[])
            } else if data.is_empty() {
                Ok(())
            } else {
                proto::write_frame(conn, Kind::Stdin, data)
            };
            if sent.is_err() {
                stdin_open = false;
            }
        }
        if !re[0].is_empty() {
            let n = std::io::Read::read(conn, &mut buf)?;
            if n == 0 {
                // The monitor went away without an exit frame.
                return Ok(Some(SessionEnd {
                    code: 125,
                    cleaned: false,
                }));
            }
            dec.push(&buf[..n]);
            while let Some((kind, payload)) = dec.next_frame()? {
                match kind {
                    Kind::Stdout => {
                        out.write_all(&payload)?;
                        out.flush()?;
                    }
                    Kind::Stderr => {
                        err.write_all(&payload)?;
                    }
                    Kind::Exit => return Ok(Some(session_end(&payload, &mut dec))),
                    _ => {}
                }
            }
        }
    }
}

fn send_size(conn: &mut UnixStream) {
    if let Ok((rows, cols)) = berth_sys::pty::get_winsize(std::io::stdin().as_fd()) {
        let mut p = rows.to_be_bytes().to_vec();
        p.extend_from_slice(&cols.to_be_bytes());
        let _ = proto::write_frame(conn, Kind::Resize, &p);
    }
}

/// The terminal in raw mode while attached with -t; restored on drop.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// `start`: with -a, attach to its output and return its exit code.
pub fn start(
    store: &mut ImageStore,
    paths: &Paths,
    names: &[String],
    attach: bool,
    interactive: bool,
) -> i32 {
    let mut code = 0;
    for n in names {
        let r = (|| -> anyhow::Result<i32> {
            let rec = ctr::find(store, paths, n)?;
            let cfg = ctr::config_of(&rec)?;
            let started = ctr::start(store, paths, rec, attach)?;
            match started.attach {
                Some(conn) => {
                    let mut args = dummy_args(&cfg);
                    args.interactive = interactive && cfg.open_stdin;
                    let code = attach_session(conn, &args, true, false)?;
                    Ok(code)
                }
                None => {
                    println!("{n}");
                    Ok(0)
                }
            }
        })();
        match r {
            Ok(c) => code = c,
            Err(e) => {
                let c = report("", &e);
                eprintln!("Error: failed to start containers: {n}");
                code = c.max(1);
            }
        }
    }
    code
}

fn dummy_args(cfg: &ContainerConfig) -> CreateArgs {
    CreateArgs {
        help: None,
        name: None,
        interactive: cfg.open_stdin,
        tty: cfg.tty,
        env: vec![],
        env_file: vec![],
        workdir: None,
        user: None,
        entrypoint: None,
        label: vec![],
        hostname: None,
        restart: "no".into(),
        rm: cfg.auto_remove,
        resources: ResourceFlags::default(),
        ulimit: vec![],
        read_only: false,
        tmpfs: vec![],
        volume: vec![],
        mount: vec![],
        volumes_from: vec![],
        cap_add: vec![],
        cap_drop: vec![],
        privileged: false,
        security_opt: vec![],
        device: vec![],
        init: false,
        stop_signal: None,
        stop_timeout: None,
        network: None,
        net: Default::default(),
        log_opt: vec![],
        log_driver: None,
        pull: "missing".into(),
        image: cfg.image.clone(),
        command: vec![],
    }
}

/// `stop`, `kill`, `rm`, `wait` over several names: each name (or ID) is
/// echoed on success, errors go to stderr, the exit code is 1 if any failed.
pub fn each(
    store: &mut ImageStore,
    paths: &Paths,
    names: &[String],
    mut f: impl FnMut(&mut ImageStore, &Paths, ContainerRecord) -> anyhow::Result<Option<String>>,
) -> i32 {
    let mut code = 0;
    for n in names {
        let r = ctr::find(store, paths, n)
            .map_err(anyhow::Error::from)
            .and_then(|rec| f(store, paths, rec));
        match r {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) => println!("{n}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e:#}");
                code = 1;
            }
        }
    }
    code
}

/// What `ps` shows.
pub struct PsOptions<'a> {
    pub all: bool,
    pub quiet: bool,
    pub no_trunc: bool,
    pub last: Option<usize>,
    pub size: bool,
    pub filters: &'a [String],
    pub format: Option<&'a str>,
}

/// The apparent size of the files under `dir` (not following symlinks).
pub fn tree_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.path().symlink_metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// One `ps` row as the fields Docker's templates know.
fn ps_row(
    store: &ImageStore,
    paths: &Paths,
    c: &ContainerRecord,
    no_trunc: bool,
    size: bool,
) -> serde_json::Value {
    let cfg = ctr::config_of(c).unwrap_or_default();
    let cmd = c.command.join(" ");
    let command = if no_trunc || cmd.chars().count() <= 20 {
        format!("\"{cmd}\"")
    } else {
        format!("\"{}…\"", cmd.chars().take(19).collect::<String>())
    };
    let labels: Vec<String> = cfg.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mounts: Vec<String> = cfg
        .mounts
        .iter()
        .map(|m| {
            m.name
                .clone()
                .unwrap_or_else(|| m.source.display().to_string())
        })
        .collect();
    let size_text = if size {
        let own = tree_size(&paths.container_dir(&c.id).join("upper"));
        let virt = c
            .image_id
            .parse()
            .ok()
            .and_then(|id| store.db.image(&id).ok().flatten())
            .map_or(0, |i| i.size);
        format!(
            "{} (virtual {})",
            crate::human::size(own),
            crate::human::size(own + virt)
        )
    } else {
        String::new()
    };
    serde_json::json!({
        "ID": if no_trunc { c.id.clone() } else { c.id[..12].to_string() },
        "Image": c.image,
        "Command": command,
        "CreatedAt": c.created,
        "RunningFor": format!("{} ago", since(&c.created)),
        "Ports": crate::networks_cli::ports_column(store, c),
        "State": c.state,
        "Status": status_text(c),
        "Size": size_text,
        "Names": c.name,
        "Labels": labels.join(","),
        "Mounts": mounts.join(","),
        "Networks": crate::networks_cli::mode_name(&cfg.network),
    })
}

/// `ps`.
pub fn ps(store: &mut ImageStore, paths: &Paths, o: &PsOptions<'_>) -> anyhow::Result<i32> {
    let mut list = ctr::list(store, paths)?;
    let mut want: Vec<(String, String)> = Vec::new();
    for f in o.filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| bad(format!("bad format of filter (expected name=value): {f}")))?;
        match k {
            "status" | "name" | "id" | "label" | "ancestor" | "exited" | "volume" | "network" => {
                want.push((k.to_string(), v.to_string()))
            }
            // Relative to another container's creation time.
            "before" | "since" => {
                let other = ctr::find(store, paths, v)?;
                want.push((k.to_string(), other.created));
            }
            _ => return Err(bad(format!("invalid filter '{k}'"))),
        }
    }
    let show_all =
        o.all || o.last.is_some() || want.iter().any(|(k, _)| k == "status" || k == "exited");
    list.retain(|c| {
        (show_all
            || c.state == state::RUNNING
            || c.state == state::RESTARTING
            || c.state == state::PAUSED)
            && want.iter().all(|(k, v)| match k.as_str() {
                "status" => c.state == *v,
                "name" => c.name.contains(v.as_str()),
                "id" => c.id.starts_with(v.as_str()),
                "exited" => c.state == state::EXITED && c.exit_code.to_string() == *v,
                "before" => c.created < *v,
                "since" => c.created > *v,
                "volume" => ctr::config_of(c)
                    .unwrap_or_default()
                    .mounts
                    .iter()
                    .any(|m| m.name.as_deref() == Some(v.as_str()) || m.destination == *v),
                "network" => {
                    crate::networks_cli::mode_name(&ctr::config_of(c).unwrap_or_default().network)
                        == *v
                }
                "ancestor" => c.image == *v || c.image_id.contains(v.as_str()),
                "label" => {
                    let cfg = ctr::config_of(c).unwrap_or_default();
                    match v.split_once('=') {
                        Some((lk, lv)) => cfg.labels.get(lk).is_some_and(|x| x == lv),
                        None => cfg.labels.contains_key(v.as_str()),
                    }
                }
                _ => true,
            })
    });
    if let Some(n) = o.last {
        list.truncate(n);
    }
    let mut out = std::io::stdout().lock();
    if o.quiet {
        for c in &list {
            writeln!(out, "{}", if o.no_trunc { &c.id[..] } else { &c.id[..12] })?;
        }
        return Ok(0);
    }
    let wants_size = o.size || o.format.is_some_and(|f| f.contains(".Size"));
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|c| ps_row(store, paths, c, o.no_trunc, wants_size))
        .collect();
    let headers: std::collections::HashMap<String, String> = [
        ("ID", "CONTAINER ID"),
        ("Image", "IMAGE"),
        ("Command", "COMMAND"),
        ("CreatedAt", "CREATED AT"),
        ("RunningFor", "CREATED"),
        ("Ports", "PORTS"),
        ("State", "STATE"),
        ("Status", "STATUS"),
        ("Size", "SIZE"),
        ("Names", "NAMES"),
        ("Labels", "LABELS"),
        ("Mounts", "MOUNTS"),
        ("Networks", "NETWORKS"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let default = if o.size {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}\t{{.Size}}"
    } else {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
    };
    let fmt = crate::gotmpl::format(o.format.unwrap_or("table"))?;
    let default = crate::gotmpl::parse(default)?;
    write!(out, "{}", fmt.render(&rows, &headers, &default)?)?;
    Ok(0)
}

/// How long ago an RFC 3339 time was, as Docker words it ("5 minutes").
fn since(rfc: &str) -> String {
    let d = humantime::parse_rfc3339_weak(rfc)
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    crate::human::duration(d)
}

/// Docker's STATUS column.
fn status_text(c: &ContainerRecord) -> String {
    match c.state.as_str() {
        state::RUNNING => format!("Up {}", since(&c.started_at)),
        state::PAUSED => format!("Up {} (Paused)", since(&c.started_at)),
        state::RESTARTING => format!("Restarting ({}) {} ago", c.exit_code, since(&c.finished_at)),
        state::EXITED if c.started_at.is_empty() => "Created".into(),
        state::EXITED => format!("Exited ({}) {} ago", c.exit_code, since(&c.finished_at)),
        state::CREATED => "Created".into(),
        other => other.to_string(),
    }
}

/// Docker's time arguments (`--since`, `--until`): an RFC 3339 time (or a
/// date-time without zone, taken as UTC), Unix seconds (with a fraction),
/// or a duration before now (`10m`, `1h30m`, `45s`).
pub fn parse_time(s: &str) -> anyhow::Result<std::time::SystemTime> {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(SystemTime::now() - d);
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs >= 0.0 {
            return Ok(UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(&format!("{s}T00:00:00")) {
        return Ok(t);
    }
    Err(bad(format!(
        "invalid value for \"since\"/\"until\": failed to parse value as time or duration: \"{s}\""
    )))
}

/// What `logs` shows.
pub struct LogOptions<'a> {
    pub follow: bool,
    pub tail: Option<&'a str>,
    pub timestamps: bool,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
}

/// `logs`.
pub fn logs(
    store: &mut ImageStore,
    paths: &Paths,
    name: &str,
    o: &LogOptions<'_>,
) -> anyhow::Result<i32> {
    let (follow, tail, timestamps) = (o.follow, o.tail, o.timestamps);
    let since = o.since.map(parse_time).transpose()?;
    let until = o.until.map(parse_time).transpose()?;
    let in_window = |time: &str| -> bool {
        let Ok(t) = humantime::parse_rfc3339_weak(time) else {
            return true;
        };
        since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
    };
    let rec = ctr::find(store, paths, name)?;
    let path = paths.log_path(&rec.id);
    let tail_n: Option<usize> = match tail {
        None | Some("all") => None,
        Some(n) => Some(
            n.parse()
                .map_err(|_| bad(format!("invalid tail value: {n}")))?,
        ),
    };
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<proto::LogLine>(l).is_ok_and(|x| in_window(&x.time)))
        .collect();
    let start = tail_n.map_or(0, |n| lines.len().saturating_sub(n));
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    let emit = |line: &str, out: &mut dyn Write, err: &mut dyn Write| -> anyhow::Result<()> {
        let Ok(l) = serde_json::from_str::<proto::LogLine>(line) else {
            return Ok(());
        };
        let w: &mut dyn Write = if l.stream == "stderr" { err } else { out };
        if timestamps {
            write!(w, "{} ", l.time)?;
        }
        w.write_all(l.log.as_bytes())?;
        Ok(())
    };
    for l in &lines[start..] {
        emit(l, &mut out, &mut err)?;
    }
    out.flush()?;
    if !follow {
        return Ok(0);
    }
    let mut offset = text.len() as u64;
    loop {
        let running = ctr::find(store, paths, &rec.id)
            .map(|r| {
                matches!(
                    r.state.as_str(),
                    state::RUNNING | state::RESTARTING | state::PAUSED
                )
            })
            .unwrap_or(false);
        let data = std::fs::read(&path).unwrap_or_default();
        if (data.len() as u64) < offset {
            offset = 0; // rotated
        }
        let new = &data[offset as usize..];
        if let Some(end) = new.iter().rposition(|&b| b == b'\n') {
            for l in String::from_utf8_lossy(&new[..=end]).lines() {
                emit(l, &mut out, &mut err)?;
            }
            out.flush()?;
            offset += end as u64 + 1;
        }
        if !running {
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `inspect` of a container, in Docker's shape (the parts berth knows).
pub fn inspect_json(paths: &Paths, c: &ContainerRecord) -> serde_json::Value {
    let cfg = ctr::config_of(c).unwrap_or_default();
    let running = matches!(
        c.state.as_str(),
        state::RUNNING | state::PAUSED | state::RESTARTING
    );
    let (path, args) = match c.command.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (String::new(), vec![]),
    };
    let zero = "0001-01-01T00:00:00Z".to_string();
    serde_json::json!({
        "Id": c.id,
        "Created": c.created,
        "Path": path,
        "Args": args,
        "State": {
            "Status": c.state,
            "Running": running && c.state != state::RESTARTING,
            "Paused": c.state == state::PAUSED,
            "Restarting": c.state == state::RESTARTING,
            "OOMKilled": c.oom_killed,
            "Dead": c.state == state::DEAD,
            "Pid": if running { c.pid } else { 0 },
            "ExitCode": c.exit_code,
            "Error": c.error,
            "StartedAt": if c.started_at.is_empty() { zero.clone() } else { c.started_at.clone() },
            "FinishedAt": if c.finished_at.is_empty() { zero } else { c.finished_at.clone() },
        },
        "Image": c.image_id,
        "ResolvConfPath": paths.etc_file(&c.id, "resolv.conf"),
        "HostnamePath": paths.etc_file(&c.id, "hostname"),
        "HostsPath": paths.etc_file(&c.id, "hosts"),
        "LogPath": paths.log_path(&c.id),
        "Name": format!("/{}", c.name),
        "RestartCount": c.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {
            "AutoRemove": cfg.auto_remove,
            "Privileged": cfg.privileged,
            "ReadonlyRootfs": cfg.read_only,
            "CapAdd": cfg.cap_add,
            "CapDrop": cfg.cap_drop,
            "Memory": cfg.resources.memory.unwrap_or(0),
            "MemorySwap": cfg.resources.memory_swap.unwrap_or(0),
            "NanoCpus": cfg.resources.nano_cpus.unwrap_or(0),
            "CpuShares": cfg.resources.cpu_shares.unwrap_or(0),
            "CpusetCpus": cfg.resources.cpuset_cpus.clone().unwrap_or_default(),
            "PidsLimit": cfg.resources.pids_limit,
            "Init": cfg.init,
            "NetworkMode": crate::networks_cli::mode_name(&cfg.network),
            "RestartPolicy": {"Name": if cfg.restart.name.is_empty() { "no".to_string() } else { cfg.restart.name.clone() }, "MaximumRetryCount": cfg.restart.max_retries},
            "LogConfig": {"Type": "json-file", "Config": cfg.log_opts},
            "Binds": cfg.mounts.iter().filter(|m| m.kind == MountKind::Bind).map(|m| format!("{}:{}{}", m.source.display(), m.destination, if m.read_only { ":ro" } else { "" })).collect::<Vec<_>>(),
        },
        "Mounts": cfg.mounts.iter().map(|m| serde_json::json!({
            "Type": match m.kind { MountKind::Bind => "bind", MountKind::Volume => "volume", MountKind::Tmpfs => "tmpfs" },
            "Name": m.name.clone().unwrap_or_default(),
            "Driver": if m.kind == MountKind::Volume { "local" } else { "" },
            "Source": m.source,
            "Destination": m.destination,
            "RW": !m.read_only,
            "Propagation": m.propagation.clone().unwrap_or_else(|| if m.kind == MountKind::Bind { "rprivate".into() } else { String::new() }),
        })).collect::<Vec<_>>(),
        "Config": {
            "Hostname": cfg.hostname.clone().unwrap_or_else(|| c.id[..12].to_string()),
            "User": cfg.user.clone().unwrap_or_default(),
            "Tty": cfg.tty,
            "OpenStdin": cfg.open_stdin,
            "Env": cfg.env,
            "Cmd": cfg.cmd,
            "Image": cfg.image,
            "WorkingDir": cfg.workdir.clone().unwrap_or_default(),
            "Entrypoint": cfg.entrypoint,
            "Labels": cfg.labels,
            "StopSignal": cfg.stop_signal,
            "StopTimeout": cfg.stop_timeout,
        },
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "UpperDir": paths.container_dir(&c.id).join("upper"),
                "WorkDir": paths.container_dir(&c.id).join("work"),
                "MergedDir": paths.rootfs(&c.id),
            }
        },
    })
}

/// Wait for a container to stop; its exit code.
pub fn wait_one(
    store: &mut ImageStore,
    paths: &Paths,
    rec: ContainerRecord,
) -> anyhow::Result<String> {
    let r = ctr::wait_stopped(store, paths, &rec.id, None)?;
    Ok(r.exit_code.to_string())
}

/// The berth command line that the monitor runs for `--rm`.
pub fn self_command(root: &std::path::Path, run_root: &std::path::Path) -> Vec<String> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "berth".into());
    vec![
        exe,
        "--root".into(),
        root.display().to_string(),
        "--run-root".into(),
        run_root.display().to_string(),
    ]
}

/// The default run root for a store root: `/run/berth` for the default
/// root, otherwise one of its own per root.
pub fn default_run_root(root: &std::path::Path) -> PathBuf {
    if root == std::path::Path::new("/var/lib/berth") {
        return PathBuf::from("/run/berth");
    }
    use sha2::Digest as _;
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let d = sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    PathBuf::from(format!("/run/berth-{hex}"))
}

// `exec`'s flags.
#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Give extended privileges to the command (accepted)
    #[arg(long)]
    pub privileged: bool,
    /// Container name or ID
    pub container: String,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `exec`: a new process in a running container, in the foreground (its
/// exit code) or detached.
pub fn exec(store: &mut ImageStore, paths: &Paths, a: &ExecArgs) -> i32 {
    let r = (|| -> anyhow::Result<i32> {
        let rec = ctr::find(store, paths, &a.container)?;
        if rec.state != state::RUNNING {
            return Err(
                ContainerError::Conflict(format!("container {} is not running", rec.id)).into(),
            );
        }
        let root = paths.runtime();
        let spec = berth_runtime::saved_config(&root, &rec.id)?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(a.command.clone()));
        process.set_terminal(Some(a.tty));
        let mut env = process.env().clone().unwrap_or_default();
        for kv in resolve_env(a.env.clone()) {
            let key = kv.split('=').next().unwrap_or_default().to_string();
            env.retain(|e| e.split('=').next() != Some(key.as_str()));
            env.push(kv);
        }
        process.set_env(Some(env));
        if let Some(w) = &a.workdir {
            process.set_cwd(w.into());
        }
        if let Some(u) = &a.user {
            let resolved = berth_engine::spec::resolve_user(&paths.rootfs(&rec.id), u)?;
            let mut user = process.user().clone();
            user.set_uid(resolved.uid);
            user.set_gid(resolved.gid);
            user.set_additional_gids(Some(resolved.additional_gids.clone()));
            process.set_user(user);
        }
        let (local, theirs) = if a.tty && !a.detach {
            let (l, t) = crate::wait::LocalConsole::new()?;
            (Some(l), Some(t))
        } else {
            (None, None)
        };
        let opts = berth_runtime::ExecOptions {
            process: Some(process),
            console: theirs,
            detach: a.detach,
            ..Default::default()
        };
        // Without -i the process gets no input.
        let saved_stdin = if a.interactive {
            None
        } else {
            let null = std::fs::File::open("/dev/null")?;
            let saved = nix::unistd::dup(std::io::stdin())?;
            berth_sys::fd::dup_onto(null.as_fd(), 0)?;
            Some(saved)
        };
        let set = crate::wait::block()?;
        let execed = berth_runtime::exec(&root, &rec.id, &opts);
        if let Some(s) = saved_stdin {
            berth_sys::fd::dup_onto(s.as_fd(), 0)?;
        }
        let execed = execed.map_err(|e| {
            anyhow::Error::new(ContainerError::Start {
                code: e.exec_failure_code().unwrap_or(125),
                msg: e.to_string(),
            })
        })?;
        if a.detach {
            return Ok(0);
        }
        let master = match &local {
            Some(l) => Some(l.master()?),
            None => None,
        };
        crate::wait::foreground(execed.pid, &set, master)
    })();
    match r {
        Ok(c) => c,
        Err(e) => {
            let code = e
                .downcast_ref::<ContainerError>()
                .map(ContainerError::exit_code)
                .unwrap_or(1);
            eprintln!("Error response from daemon: {e:#}");
            if code == 125 {
                1
            } else {
                code
            }
        }
    }
}

/// `top`: the host's `ps` (default `-ef`), rows of the container's
/// processes only, as Docker does.
pub fn top(
    store: &mut ImageStore,
    paths: &Paths,
    name: &str,
    ps_args: &[String],
) -> anyhow::Result<i32> {
    let rec = ctr::find(store, paths, name)?;
    let pids = ctr::pids(paths, &rec)?;
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let o = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("running ps")?;
    if !o.status.success() {
        return Err(bad(format!(
            "ps: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| bad("Couldn't find PID field in ps output"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{header}")?;
    for l in lines {
        let pid: Option<i32> = l
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            writeln!(out, "{l}")?;
        }
    }
    Ok(0)
}

/// `attach`: stream a running container's output (and stdin unless
/// `--no-stdin`) until it exits; its exit code.
pub fn attach(
    store: &mut ImageStore,
    paths: &Paths,
    name: &str,
    no_stdin: bool,
    sig_proxy: bool,
    detach_keys: Option<&str>,
) -> i32 {
    let r = (|| -> anyhow::Result<i32> {
        let keys = parse_detach_keys(detach_keys.unwrap_or("ctrl-p,ctrl-q"))?;
        let rec = ctr::find(store, paths, name)?;
        let cfg = ctr::config_of(&rec)?;
        let conn = ctr::attach(paths, &rec)?;
        let mut args = dummy_args(&cfg);
        args.interactive = cfg.open_stdin && !no_stdin;
        let mut conn = conn;
        Ok(
            attach_session_keys(&mut conn, &args, sig_proxy, false, Some(&keys))?
                .map_or(0, |e| e.code),
        )
    })();
    r.unwrap_or_else(|e| {
        eprintln!("Error response from daemon: {e:#}");
        1
    })
}

/// `container prune`.
pub fn prune(store: &mut ImageStore, paths: &Paths, force: bool) -> anyhow::Result<i32> {
    if !force {
        eprint!("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !answer.trim().eq_ignore_ascii_case("y") {
            return Ok(0);
        }
    }
    let removed = ctr::prune(store, paths)?;
    let mut out = std::io::stdout().lock();
    if !removed.is_empty() {
        writeln!(out, "Deleted Containers:")?;
        for id in &removed {
            writeln!(out, "{id}")?;
        }
        writeln!(out)?;
    }
    writeln!(out, "Total reclaimed space: 0B")?;
    Ok(0)
}

/// `stats`: one table of the containers' resource use; with `stream`,
/// redrawn every second until interrupted.
pub fn stats(
    store: &mut ImageStore,
    paths: &Paths,
    names: &[String],
    all: bool,
    stream: bool,
    format: Option<&str>,
) -> anyhow::Result<i32> {
    use std::time::{Duration, Instant};
    let root = paths.runtime();
    let total_mem = crate::system_cli::mem_total();
    let pick = |store: &mut ImageStore| -> anyhow::Result<Vec<ContainerRecord>> {
        if names.is_empty() {
            Ok(ctr::list(store, paths)?
                .into_iter()
                .filter(|c| all || c.state == state::RUNNING || c.state == state::PAUSED)
                .collect())
        } else {
            names
                .iter()
                .map(|n| ctr::find(store, paths, n).map_err(anyhow::Error::from))
                .collect()
        }
    };
    let sample = |c: &ContainerRecord| -> Option<(berth_runtime::cgroups::Stats, Instant)> {
        if c.state != state::RUNNING && c.state != state::PAUSED {
            return None;
        }
        berth_runtime::stats(&root, &c.id)
            .ok()
            .map(|s| (s, Instant::now()))
    };
    let headers: std::collections::HashMap<String, String> = [
        ("ID", "CONTAINER ID"),
        ("Container", "CONTAINER"),
        ("Name", "NAME"),
        ("CPUPerc", "CPU %"),
        ("MemUsage", "MEM USAGE / LIMIT"),
        ("MemPerc", "MEM %"),
        ("NetIO", "NET I/O"),
        ("BlockIO", "BLOCK I/O"),
        ("PIDs", "PIDS"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let default = crate::gotmpl::parse(
        "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}",
    )?;
    let fmt = crate::gotmpl::format(format.unwrap_or("table"))?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let list = pick(store)?;
        let before: Vec<_> = list.iter().map(sample).collect();
        std::thread::sleep(Duration::from_millis(if stream { 1000 } else { 250 }));
        let mut rows = Vec::new();
        for (c, b) in list.iter().zip(before) {
            let after = sample(c);
            let (cpu, mem, limit, pids, read, write) = match (&b, &after) {
                (Some((s0, t0)), Some((s1, t1))) => {
                    let dt = t1.duration_since(*t0).as_nanos().max(1) as f64;
                    let du = s1.cpu.usage_total_ns.saturating_sub(s0.cpu.usage_total_ns) as f64;
                    let limit = s1
                        .memory
                        .limit
                        .filter(|l| *l < total_mem)
                        .unwrap_or(total_mem);
                    let (mut r, mut w) = (0u64, 0u64);
                    for e in &s1.blkio.io_service_bytes {
                        match e.op.as_str() {
                            "Read" | "read" => r += e.value,
                            "Write" | "write" => w += e.value,
                            _ => {}
                        }
                    }
                    (
                        du / dt * 100.0,
                        s1.memory.usage_without_cache(),
                        limit,
                        s1.pids.current,
                        r,
                        w,
                    )
                }
                _ => (0.0, 0, 0, 0, 0, 0),
            };
            rows.push(serde_json::json!({
                "ID": c.id[..12],
                "Container": c.id[..12],
                "Name": c.name,
                "CPUPerc": format!("{cpu:.2}%"),
                "MemUsage": format!("{} / {}", crate::human::size(mem), crate::human::size(limit)),
                "MemPerc": format!("{:.2}%", if limit > 0 { mem as f64 / limit as f64 * 100.0 } else { 0.0 }),
                "NetIO": "0B / 0B",
                "BlockIO": format!("{} / {}", crate::human::size(read), crate::human::size(write)),
                "PIDs": pids.to_string(),
            }));
        }
        let text = fmt.render(&rows, &headers, &default)?;
        let mut out = std::io::stdout().lock();
        if stream && tty {
            write!(out, "\x1b[2J\x1b[H")?;
        }
        write!(out, "{text}")?;
        out.flush()?;
        if !stream {
            return Ok(0);
        }
    }
}

// `update`'s flags.
// The resource limits `run`, `create` and `update` take.
#[derive(Args, Debug, Clone, Default)]
pub struct ResourceFlags {
    /// Memory limit
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: '-1' to enable unlimited swap
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
}

impl ResourceFlags {
    /// The limits asked for; a limit whose flag is absent is `None`.
    pub fn limits(&self) -> anyhow::Result<berth_engine::config::Resources> {
        Ok(berth_engine::config::Resources {
            memory: self
                .memory
                .as_deref()
                .map(|m| memory_bytes(m, "--memory"))
                .transpose()?,
            memory_swap: self
                .memory_swap
                .as_deref()
                .map(|m| memory_bytes(m, "--memory-swap"))
                .transpose()?,
            nano_cpus: self.cpus.map(|c| (c * 1e9) as i64),
            cpu_shares: self.cpu_shares,
            cpuset_cpus: self.cpuset_cpus.clone(),
            pids_limit: self.pids_limit,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub resources: ResourceFlags,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    pub restart: Option<String>,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `update`.
pub fn update(store: &mut ImageStore, paths: &Paths, a: &UpdateArgs) -> i32 {
    let parsed = (|| -> anyhow::Result<_> {
        Ok((
            a.resources.limits()?,
            a.restart.as_deref().map(parse_restart).transpose()?,
        ))
    })();
    let (limits, restart) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error: {e:#}");
            return 125;
        }
    };
    each(store, paths, &a.containers, |s, p, rec| {
        ctr::update(s, p, rec, |cfg| {
            let r = &mut cfg.resources;
            let l = limits.clone();
            r.memory = l.memory.or(r.memory);
            r.memory_swap = l.memory_swap.or(r.memory_swap);
            r.nano_cpus = l.nano_cpus.or(r.nano_cpus);
            r.cpu_shares = l.cpu_shares.or(r.cpu_shares);
            r.cpuset_cpus = l.cpuset_cpus.or(r.cpuset_cpus.take());
            r.pids_limit = l.pids_limit.or(r.pids_limit);
            if let Some(rp) = &restart {
                cfg.restart = rp.clone();
            }
        })?;
        Ok(None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The monitor may send `Cleaned` right behind the exit, and one read
    /// may bring both: the session must not drop it with its buffer (the
    /// command then deleted the container's directory itself, on its own
    /// time).
    #[test]
    fn cleaned_read_with_the_exit_is_kept() {
        let exit = proto::frame(Kind::Exit, &proto::exit_payload(3, false));
        let mut dec = proto::Decoder::default();
        dec.push(&exit);
        dec.push(&proto::frame(Kind::Cleaned, &[]));
        let (kind, payload) = dec.next_frame().unwrap().unwrap();
        assert_eq!(kind, Kind::Exit);
        let end = session_end(&payload, &mut dec);
        assert_eq!((end.code, end.cleaned), (3, true));

        let mut dec = proto::Decoder::default();
        dec.push(&exit);
        let (_, payload) = dec.next_frame().unwrap().unwrap();
        let end = session_end(&payload, &mut dec);
        assert_eq!((end.code, end.cleaned), (3, false));
    }
}
