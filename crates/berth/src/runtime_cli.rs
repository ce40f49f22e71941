//! `berth runtime …` and `berth-runtime …`: the OCI runtime with runc's
//! command line, so engines (podman, containerd, dockerd) can use it.

use anyhow::{anyhow, bail, Context as _};
use berth_runtime::state::Root;
use berth_runtime::{CreateOptions, ExecOptions};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DEFAULT_ROOT: &str = "/run/berth/runtime";

#[derive(Parser, Debug)]
#[command(
    name = "berth-runtime",
    version,
    about = "berth's OCI runtime: runs containers from OCI bundles (runc-compatible command line)",
    disable_help_subcommand = true
)]
pub struct RuntimeCli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Directory for the containers' state (tmpfs recommended)
    #[arg(long, global = true, env = "BERTH_RUNTIME_ROOT", default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Write log messages to this file instead of stderr
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long = "log-format", global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Log level (accepted for compatibility: debug, info, warn, error)
    #[arg(long = "log-level", global = true)]
    pub log_level: Option<String>,
    /// Log debug messages
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd to manage cgroups (not supported: berth manages cgroupfs itself)
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Rootless mode (true, false or auto); with `spec`, write a rootless config
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum Cmd {
    /// Create a container from a bundle, ready to start
    Create(CreateArgs),
    /// Start a created container's process
    Start { id: String },
    /// Print the state of a container as JSON
    State { id: String },
    /// Send a signal to a container's process (default SIGTERM)
    Kill {
        /// Send the signal to every process of the container
        #[arg(short, long)]
        all: bool,
        id: String,
        /// Signal name (TERM, SIGKILL, …) or number
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container and everything it holds
    Delete {
        /// Kill it first if it still runs
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container, wait for it and delete it
    Run(RunArgs),
    /// Run a new process inside a running container
    Exec(ExecArgs),
    /// List the containers
    List {
        /// Output format: table or json
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Print only the ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show the processes running inside a container
    Ps {
        /// Output format: table or json
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        id: String,
        /// Options for ps (default -ef)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of a container
    Pause { id: String },
    /// Thaw a paused container
    Resume { id: String },
    /// Print what this runtime supports, as JSON
    Features,
    /// Write a default config.json into a bundle
    Spec {
        /// Bundle directory
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Bundle directory (holding config.json)
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// File to write the container process's pid to
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is set
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Do not use pivot_root (for a rootfs on a ramfs)
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a session keyring (berth never creates one)
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass this many extra descriptors (from 3 on) to the container
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return after starting, leaving the container running
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container after it exits (do not delete it)
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// Unix socket that receives the pty master
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Working directory in the container
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=value)
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// User: uid[:gid]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional group ids
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// A process.json describing the process (instead of arguments)
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Do not wait for the process
    #[arg(short, long)]
    pub detach: bool,
    /// File to write the process's pid to
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Add a capability to the process's bounding, effective and permitted sets
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privs for the process
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// AppArmor profile (ignored where AppArmor is absent)
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux label (ignored)
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// Pass this many extra descriptors (from 3 on) to the process
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted for compatibility
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    pub id: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Run the runtime command line; returns the process exit code.
pub fn main(prog: &str, args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match RuntimeCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let log = cli.global.log.clone();
    let json = cli.global.log_format == "json";
    if let Err(e) = crate::logging::init(log.as_deref(), json, cli.global.debug) {
        eprintln!("{prog}: {e:#}");
        return 1;
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            if let (Some(l), true) = (&log, json) {
                crate::logging::log_error_json(l, &msg);
            }
            eprintln!("{prog}: {msg}");
            1
        }
    }
}

fn run(cli: RuntimeCli) -> anyhow::Result<i32> {
    if cli.global.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: berth manages cgroups through cgroupfs; drop the flag");
    }
    let root = Root::new(&cli.global.root);
    let global = cli.global.clone();
    match cli.cmd {
        Cmd::Create(a) => {
            protect()?;
            berth_runtime::create(&root, &a.id, &create_options(&a, None))?;
            Ok(0)
        }
        Cmd::Start { id } => {
            berth_runtime::start(&root, &id)?;
            Ok(0)
        }
        Cmd::State { id } => {
            let st = berth_runtime::state(&root, &id)?;
            println!("{}", serde_json::to_string_pretty(&st)?);
            Ok(0)
        }
        Cmd::Kill { all, id, signal } => {
            let sig = berth_runtime::signal::parse(&signal)?;
            berth_runtime::kill(&root, &id, sig, all)?;
            Ok(0)
        }
        Cmd::Delete { force, id } => {
            berth_runtime::delete(&root, &id, force)?;
            Ok(0)
        }
        Cmd::Run(a) => {
            protect()?;
            run_container(&root, &a)
        }
        Cmd::Exec(a) => {
            protect()?;
            exec(&root, &a)
        }
        Cmd::List { format, quiet } => list(&root, &format, quiet),
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => ps(&root, &id, &format, &ps_args),
        Cmd::Pause { id } => {
            berth_runtime::pause(&root, &id)?;
            Ok(0)
        }
        Cmd::Resume { id } => {
            berth_runtime::resume(&root, &id)?;
            Ok(0)
        }
        Cmd::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&berth_runtime::spec::features())?
            );
            Ok(0)
        }
        Cmd::Spec { bundle } => {
            let rootless = global.rootless.as_deref() == Some("true");
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("file {} exists; remove it first", path.display());
            }
            let v = berth_runtime::spec::default_spec(
                rootless,
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            );
            std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")
                .with_context(|| format!("write {}", path.display()))?;
            Ok(0)
        }
    }
}

/// Re-run from a copy of ourselves that a container cannot overwrite
/// before any process of ours enters a container (CVE-2019-5736).
fn protect() -> anyhow::Result<()> {
    berth_sys::sealed::ensure_protected().context("protect the runtime binary")
}

fn create_options(a: &CreateArgs, console: Option<std::os::fd::OwnedFd>) -> CreateOptions {
    CreateOptions {
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        console,
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        netns: None,
        cgroup_made: None,
    }
}

/// Whether the bundle's process asks for a terminal (to hold it ourselves
/// when no console socket is given).
fn wants_terminal(bundle: &Path) -> bool {
    berth_runtime::config::load(bundle)
        .ok()
        .and_then(|s| s.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}

fn run_container(root: &Root, a: &RunArgs) -> anyhow::Result<i32> {
    let local =
        if a.create.console_socket.is_none() && !a.detach && wants_terminal(&a.create.bundle) {
            Some(crate::wait::LocalConsole::new()?)
        } else {
            None
        };
    let (local, theirs) = match local {
        Some((l, t)) => (Some(l), Some(t)),
        None => (None, None),
    };
    let created = berth_runtime::create(root, &a.create.id, &create_options(&a.create, theirs))?;
    let set = crate::wait::block()?;
    let master = match &local {
        Some(l) => Some(l.master()?),
        None => None,
    };
    if let Err(e) = berth_runtime::start(root, &a.create.id) {
        let _ = berth_runtime::delete(root, &a.create.id, true);
        return Err(e.into());
    }
    if a.detach {
        return Ok(0);
    }
    let code = crate::wait::foreground(created.pid, &set, master)?;
    if !a.keep {
        berth_runtime::delete(root, &a.create.id, true)?;
    }
    Ok(code)
}

fn parse_user(s: &str) -> anyhow::Result<(u32, Option<u32>)> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = u
        .parse()
        .map_err(|_| anyhow!("--user {s:?}: expected uid[:gid] numbers"))?;
    let gid = g
        .map(|g| {
            g.parse()
                .map_err(|_| anyhow!("--user {s:?}: expected uid[:gid] numbers"))
        })
        .transpose()?;
    Ok((uid, gid))
}

fn exec(root: &Root, a: &ExecArgs) -> anyhow::Result<i32> {
    use oci_spec::runtime::{Capability, Process};
    let mut process: Process = if let Some(p) = &a.process {
        let data = std::fs::read(p).with_context(|| format!("--process {}", p.display()))?;
        serde_json::from_slice(&data).map_err(|e| anyhow!("--process {}: {e}", p.display()))?
    } else {
        if a.command.is_empty() {
            bail!("exec needs a command (or --process)");
        }
        let spec = berth_runtime::saved_config(root, &a.id)?;
        let mut p = spec.process().clone().unwrap_or_default();
        p.set_args(Some(a.command.clone()));
        p.set_terminal(Some(a.tty));
        p
    };
    if !a.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        for kv in &a.env {
            let key = kv.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        process.set_env(Some(env));
    }
    if let Some(cwd) = &a.cwd {
        process.set_cwd(cwd.clone());
    }
    if let Some(u) = &a.user {
        let (uid, gid) = parse_user(u)?;
        let mut user = process.user().clone();
        user.set_uid(uid);
        if let Some(g) = gid {
            user.set_gid(g);
        }
        process.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = process.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        process.set_user(user);
    }
    if a.tty {
        process.set_terminal(Some(true));
    }
    if a.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if !a.cap.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for c in &a.cap {
            let cap: Capability = serde_json::from_value(serde_json::Value::String(c.clone()))
                .map_err(|_| anyhow!("--cap {c:?}: unknown capability"))?;
            for set in [
                caps.bounding().clone(),
                caps.effective().clone(),
                caps.permitted().clone(),
            ] {
                let _ = set;
            }
            let mut b = caps.bounding().clone().unwrap_or_default();
            b.insert(cap);
            caps.set_bounding(Some(b));
            let mut e = caps.effective().clone().unwrap_or_default();
            e.insert(cap);
            caps.set_effective(Some(e));
            let mut p = caps.permitted().clone().unwrap_or_default();
            p.insert(cap);
            caps.set_permitted(Some(p));
        }
        process.set_capabilities(Some(caps));
    }
    if a.apparmor.is_some() {
        process.set_apparmor_profile(a.apparmor.clone());
    }
    let terminal = process.terminal().unwrap_or(false);
    let (local, theirs) = if terminal && a.console_socket.is_none() && !a.detach {
        let (l, t) = crate::wait::LocalConsole::new()?;
        (Some(l), Some(t))
    } else {
        (None, None)
    };
    let opts = ExecOptions {
        process: Some(process),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        console: theirs,
        detach: a.detach,
        preserve_fds: a.preserve_fds,
    };
    let set = crate::wait::block()?;
    let execed = berth_runtime::exec(root, &a.id, &opts)?;
    if a.detach {
        return Ok(0);
    }
    let master = match &local {
        Some(l) => Some(l.master()?),
        None => None,
    };
    crate::wait::foreground(execed.pid, &set, master)
}

fn list(root: &Root, format: &str, quiet: bool) -> anyhow::Result<i32> {
    let all = berth_runtime::list(root)?;
    let mut out = std::io::stdout().lock();
    if quiet {
        for s in &all {
            writeln!(out, "{}", s.id)?;
        }
        return Ok(0);
    }
    if format == "json" {
        writeln!(out, "{}", serde_json::to_string(&all)?)?;
        return Ok(0);
    }
    let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
        .map(String::from)
        .to_vec()];
    for s in &all {
        rows.push(vec![
            s.id.clone(),
            s.pid.to_string(),
            s.status.to_string(),
            s.bundle.display().to_string(),
            s.created.clone(),
            s.owner.clone(),
        ]);
    }
    write!(out, "{}", crate::human::table_min(&rows, 12))?;
    Ok(0)
}

fn ps(root: &Root, id: &str, format: &str, ps_args: &[String]) -> anyhow::Result<i32> {
    let pids = berth_runtime::pids(root, id)?;
    if format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(0);
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("run ps")?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| anyhow!("ps output has no PID column"))?;
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(0)
}
