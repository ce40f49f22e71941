//! `berth-monitor`: one small process per running container. It starts the
//! container through the runtime library (its init is the monitor's child),
//! holds the container's stdio or terminal, writes the json-file log,
//! serves attach clients on a unix socket, reaps the container, records its
//! exit in `state.json`, applies the restart policy, and for `--rm` removes
//! the container after its last exit. A second into the container's run it
//! puts its network endpoints on the bridges' eBPF fast path. It outlives
//! the command that started it; it knows nothing of the database (the
//! engine reads `state.json`).
//!
//! Single-threaded: one poll loop over the container's output, the attach
//! listener and clients, a pidfd of the container's init and a signalfd.

use berth_engine::monitor_proto::{
    self as proto, Decoder, Kind, LogLine, MonitorArgs, MonitorState, STATE_FILE, STOPPED_FILE,
};
use berth_runtime::state::Root;
use berth_runtime::CreateOptions;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Entry point of the `berth-monitor` binary.
pub fn main() -> i32 {
    // Started through /proc/self/fd/N, the kernel named the process "N".
    let _ = nix::sys::prctl::set_name(c"berth-monitor");
    // The one argument: the descriptor of a socket that brings the
    // arguments once the starting command has them (it starts the monitor
    // first, so that both get ready at once), and with them the sockets
    // that hold the container's published host ports.
    let Some(fd) = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<RawFd>().ok())
    else {
        eprintln!("berth-monitor: started by berth, not by hand");
        return 2;
    };
    // The container's processes must never be able to reach this binary
    // through /proc/<pid>/exe (CVE-2019-5736). The re-exec keeps our
    // inherited descriptors.
    let protected = berth_sys::sealed::ensure_protected();
    // The detached read-only mount we were started from (the second
    // argument) is kept open until we exit: closing the last descriptor
    // of a detached mount waits for an expedited RCU grace period, which
    // a start should not wait for.
    let own_mount = std::env::args()
        .nth(2)
        .and_then(|a| a.parse::<RawFd>().ok())
        .and_then(|fd| berth_sys::fd::take_inherited(fd).ok());
    let mut raw = Vec::new();
    // The descriptors that came with them: the network namespace, if
    // any, then the sockets holding the published ports.
    let mut fds = Vec::new();
    // The container's cgroup, when the command had us make it meanwhile.
    let mut made = None;
    if let Ok(sock) = berth_sys::fd::take_inherited(fd) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match berth_sys::fd::recv_with_fds(sock.as_fd(), &mut buf, &mut fds) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
            while let Some((prepare, len)) = proto::Prepare::decode(&raw) {
                raw.drain(..len);
                if let Some(p) = prepare {
                    made = make_cgroup(&p).or(made);
                }
            }
        }
    }
    // Started off its starter's CPU (see `prestart_monitor`), which it
    // set after the spawn and before anything it sent: taken back only
    // now, so that it cannot be set again after. The container's
    // processes get every CPU their cpuset gives.
    berth_sys::process::all_cpus();
    // Nothing came: the command gave up before it had a container.
    if raw.is_empty() {
        if let Some(m) = made {
            let _ = m.destroy();
        }
        return 0;
    }
    let args: MonitorArgs = match serde_json::from_slice(&raw) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-monitor: bad arguments: {e}");
            return 2;
        }
    };
    let mut ready = berth_sys::fd::take_inherited(args.ready_fd)
        .ok()
        .map(File::from);
    let attach = args
        .attach_fd
        .and_then(|fd| berth_sys::fd::take_inherited(fd).ok())
        .map(UnixStream::from);
    // Whatever else the starting command left open is not ours to keep.
    let keep: Vec<RawFd> = [
        ready.as_ref().map(|f| f.as_raw_fd()),
        attach.as_ref().map(|s| s.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    .chain(fds.iter().map(|f| f.as_raw_fd()))
    .chain(own_mount.as_ref().map(|m| m.as_raw_fd()))
    .collect();
    let _ = berth_sys::fd::close_inherited_except(&keep);
    if let Err(e) = protected {
        report(
            &mut ready,
            &format!("ERR 125 protecting the monitor binary: {e}"),
        );
        return 1;
    }
    // Made for another cgroup than the container's: not ours to keep.
    let made = match made {
        Some(m) if m.path() != Path::new(&args.cgroup) => {
            let _ = m.destroy();
            None
        }
        m => m,
    };
    match Monitor::new(args, attach, ready, fds, made) {
        Ok(mut m) => m.run(),
        Err((mut ready, msg)) => {
            report(&mut ready, &format!("ERR 125 {msg}"));
            1
        }
    }
}

/// Make the cgroup a [`proto::Prepare`] asks for; `None` when it cannot be
/// (the container's create then makes it, and reports what fails).
fn make_cgroup(p: &proto::Prepare) -> Option<berth_runtime::cgroups::Made> {
    let resources = serde_json::from_value(p.resources.clone()).ok()?;
    berth_runtime::cgroups::Made::new(Some(Path::new(&p.cgroup)), &p.id, &resources).ok()
}

/// Write the one readiness line and close the descriptor.
fn report(ready: &mut Option<File>, line: &str) {
    if let Some(mut f) = ready.take() {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// The container's stdio on our side.
struct Stdio {
    /// stdout (or the terminal master).
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// Where client stdin goes (a pipe, or the terminal master).
    input: Option<OwnedFd>,
}

struct Client {
    stream: UnixStream,
    dec: Decoder,
    streaming: bool,
    claims_removal: bool,
}

/// The json-file log with Docker's rotation.
struct Log {
    path: std::path::PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    max_files: u32,
    partial: [Vec<u8>; 2],
}

impl Log {
    fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<Log> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Log {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            max_size,
            max_files: max_files.max(1),
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Append output of a stream (0 stdout, 1 stderr): complete lines are
    /// written as entries, a partial line waits (up to 16 KiB).
    fn write(&mut self, stream: usize, data: &[u8]) {
        self.partial[stream].extend_from_slice(data);
        loop {
            let buf = &self.partial[stream];
            let cut = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if buf.len() >= 16 << 10 => buf.len(),
                None => break,
            };
            let line: Vec<u8> = self.partial[stream].drain(..cut).collect();
            self.entry(stream, &line);
        }
    }

    /// Write what is left of partial lines.
    fn flush(&mut self) {
        for s in 0..2 {
            if !self.partial[s].is_empty() {
                let line = std::mem::take(&mut self.partial[s]);
                self.entry(s, &line);
            }
        }
    }

    fn entry(&mut self, stream: usize, line: &[u8]) {
        let rec = LogLine {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: if stream == 0 { "stdout" } else { "stderr" }.into(),
            time: now(),
        };
        let Ok(mut bytes) = serde_json::to_vec(&rec) else {
            return;
        };
        bytes.push(b'\n');
        if self.max_size > 0 && self.size + bytes.len() as u64 > self.max_size && self.size > 0 {
            self.rotate();
        }
        if let Some(f) = &mut self.file {
            if f.write_all(&bytes).is_ok() {
                self.size += bytes.len() as u64;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let name = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            std::path::PathBuf::from(p)
        };
        if self.max_files > 1 {
            let _ = std::fs::remove_file(name(self.max_files - 1));
            for i in (1..self.max_files - 1).rev() {
                let _ = std::fs::rename(name(i), name(i + 1));
            }
            let _ = std::fs::rename(&self.path, name(1));
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.size = 0;
    }
}

struct Monitor {
    args: MonitorArgs,
    ready: Option<File>,
    root: Root,
    state: MonitorState,
    log: Log,
    listener: Option<UnixListener>,
    clients: Vec<Client>,
    signals: SignalFd,
    /// The container's init while it runs.
    pid: Option<i32>,
    pidfd: Option<OwnedFd>,
    stdio: Stdio,
    started: Instant,
    /// Sockets bound to the published host ports: nothing else on the
    /// host takes them while the container may still run.
    ports: Vec<OwnedFd>,
    /// The network namespace `run` made for the container (`none`), kept
    /// for restarts.
    netns: Option<OwnedFd>,
    /// The container's cgroup, made before the arguments came; for the
    /// first start only.
    made: Option<berth_runtime::cgroups::Made>,
}

/// Block SIGCHLD (for the signalfd) and SIGPIPE (writes to gone clients
/// fail instead of killing us).
fn signal_setup() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&pipe), None)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

fn set_nonblocking(fd: &impl AsFd) {
    let raw = fd.as_fd().as_raw_fd();
    if let Ok(flags) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL) {
        let mut f = nix::fcntl::OFlag::from_bits_truncate(flags);
        f.insert(nix::fcntl::OFlag::O_NONBLOCK);
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(f));
    }
    let _ = raw;
}

impl Monitor {
    #[allow(clippy::result_large_err)]
    fn new(
        args: MonitorArgs,
        attach: Option<UnixStream>,
        ready: Option<File>,
        mut fds: Vec<OwnedFd>,
        made: Option<berth_runtime::cgroups::Made>,
    ) -> Result<Monitor, (Option<File>, String)> {
        // The namespace comes first, when there is one.
        let netns = (args.netns && !fds.is_empty()).then(|| fds.remove(0));
        let ports = fds;
        let setup = || -> Result<(SignalFd, Log, UnixListener), String> {
            let signals = signal_setup().map_err(|e| format!("signals: {e}"))?;
            // Become the reaper of everything the runtime forks.
            berth_sys::process::set_child_subreaper().map_err(|e| format!("subreaper: {e}"))?;
            let log = Log::open(&args.log_path, args.log_max_size, args.log_max_files)
                .map_err(|e| format!("opening the log {}: {e}", args.log_path.display()))?;
            let sock = args.run_dir.join(proto::ATTACH_SOCKET);
            let _ = std::fs::remove_file(&sock);
            let (_dir, short) = proto::socket_path(&args.run_dir)
                .map_err(|e| format!("run dir {}: {e}", args.run_dir.display()))?;
            let listener = UnixListener::bind(&short)
                .map_err(|e| format!("attach socket {}: {e}", sock.display()))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("attach socket: {e}"))?;
            Ok((signals, log, listener))
        };
        let (signals, log, listener) = match setup() {
            Ok(x) => x,
            Err(m) => {
                if let Some(made) = made {
                    let _ = made.destroy();
                }
                return Err((ready, m));
            }
        };
        let mut clients = Vec::new();
        if let Some(stream) = attach {
            let _ = stream.set_nonblocking(true);
            // The command that made us with a connection (`run` in the
            // foreground) removes a --rm container itself while it lives.
            clients.push(Client {
                stream,
                dec: Decoder::default(),
                streaming: true,
                claims_removal: args.auto_remove,
            });
        }
        let state = MonitorState {
            status: "created".into(),
            monitor_pid: std::process::id() as i64,
            monitor_start: berth_runtime::state::proc_start(std::process::id() as i32)
                .map_or(0, |(start, _)| start),
            restart_count: args.restart_count,
            ..Default::default()
        };
        Ok(Monitor {
            root: Root::new(&args.runtime_root),
            args,
            ready,
            state,
            log,
            listener: Some(listener),
            clients,
            signals,
            pid: None,
            pidfd: None,
            stdio: Stdio {
                out: None,
                err: None,
                input: None,
            },
            started: Instant::now(),
            ports,
            netns,
            made,
        })
    }

    fn save_state(&self) {
        if let Ok(json) = serde_json::to_vec(&self.state) {
            let _ = berth_runtime::state::write_atomic(&self.args.run_dir.join(STATE_FILE), &json);
        }
    }

    fn run(&mut self) -> i32 {
        // The first start decides what the engine is told.
        match self.start_container() {
            Ok(pid) => {
                // The container has it now.
                self.made = None;
                report(&mut self.ready, &format!("OK {pid}"));
            }
            Err((code, msg)) => {
                report(&mut self.ready, &format!("ERR {code} {msg}"));
                self.cleanup_runtime();
                // The runtime removes a cgroup it took; not one it never
                // got to.
                if let Some(made) = self.made.take() {
                    let _ = made.destroy();
                }
                let _ = std::fs::remove_file(self.args.run_dir.join(proto::ATTACH_SOCKET));
                return 1;
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let (code, oom) = self.supervise();
            self.state.status = "exited".into();
            self.state.exit_code = code as i64;
            self.state.oom_killed = oom;
            self.state.finished_at = now();
            self.state.pid = 0;
            let again = self.should_restart(code);
            if !again {
                // The ports are free again before anyone learns the exit.
                self.ports.clear();
            }
            if !again && self.clients.iter().any(|c| c.claims_removal) {
                // The client that removes the container learns the exit
                // first and does its part of the removal while the
                // runtime's state goes (nobody starts a --rm container
                // again meanwhile).
                self.save_state();
                self.send_exit(code, oom);
                self.cleanup_runtime();
                self.send_cleaned();
                break;
            }
            self.cleanup_runtime();
            if !again {
                self.save_state();
                self.send_exit(code, oom);
                break;
            }
            self.send_exit(code, oom);
            // Docker's backoff: doubling from 100 ms, reset after 10 s up.
            if self.started.elapsed() >= Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            self.state.status = "restarting".into();
            self.save_state();
            if self.sleep_watching(backoff) {
                // Stopped by the user meanwhile.
                self.state.status = "exited".into();
                self.save_state();
                break;
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
            self.state.restart_count += 1;
            if let Err((_, msg)) = self.start_container() {
                self.state.status = "exited".into();
                self.state.error = msg;
                self.save_state();
                break;
            }
        }
        self.finish()
    }

    /// After the last exit: unmount the rootfs, and remove the container
    /// when it asked for `--rm` (unless an attached client does it).
    fn finish(&mut self) -> i32 {
        self.ports.clear();
        let _ = std::fs::remove_file(self.args.run_dir.join(proto::ATTACH_SOCKET));
        self.listener = None;
        // A client that claimed the removal and was sent the exit removes
        // the container, then hangs up; wait for that, and remove it here
        // only if it is still there (the client died first).
        let claimants: Vec<UnixStream> = std::mem::take(&mut self.clients)
            .into_iter()
            .filter(|c| c.claims_removal)
            .map(|c| c.stream)
            .collect();
        let _ = nix::mount::umount2(&self.args.rootfs, nix::mount::MntFlags::MNT_DETACH);
        // The container's network (veths, lease, ports, DNS records) goes
        // with its last exit, crash or not.
        if let (Some(root), Some(run_root)) = (
            &self.args.net_root,
            self.args.run_dir.parent().and_then(|p| p.parent()),
        ) {
            let _ = berth_engine::networks::teardown_at(root, run_root, &self.args.id);
        }
        for c in &claimants {
            wait_hangup(c, Duration::from_secs(60));
        }
        // The directory a claimant moved to the trash.
        if !claimants.is_empty() {
            let _ = berth_engine::containers::delete_trash(&self.args.trash_dir);
        }
        // Removing a container removes its run directory last.
        let gone = std::fs::symlink_metadata(&self.args.run_dir).is_err();
        if self.args.auto_remove && !gone && !self.args.remove_command.is_empty() {
            let mut cmd = std::process::Command::new(&self.args.remove_command[0]);
            cmd.args(&self.args.remove_command[1..])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let _ = cmd.status();
        }
        0
    }

    fn should_restart(&mut self, code: i32) -> bool {
        if self.args.run_dir.join(STOPPED_FILE).exists() {
            return false;
        }
        // `update --restart` while we run.
        if let Some((name, max)) =
            std::fs::read_to_string(self.args.run_dir.join(proto::RESTART_FILE))
                .ok()
                .and_then(|t| proto::parse_restart_file(&t))
        {
            self.args.restart = name;
            self.args.max_retries = max;
        }
        match self.args.restart.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => {
                code != 0
                    && (self.args.max_retries == 0
                        || self.state.restart_count < self.args.max_retries as i64)
            }
            _ => false,
        }
    }

    /// Sleep, still serving clients; true if the user stopped the
    /// container meanwhile.
    fn sleep_watching(&mut self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.args.run_dir.join(STOPPED_FILE).exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
            self.reap_others();
        }
        self.args.run_dir.join(STOPPED_FILE).exists()
    }

    /// Remove the runtime's state and cgroup of the container.
    fn cleanup_runtime(&mut self) {
        let _ = berth_runtime::delete(&self.root, &self.args.id, true);
    }

    /// Create and start the container with fresh stdio; its init's pid, or
    /// the exit code class (125 engine, 126 cannot invoke, 127 not found)
    /// and message.
    fn start_container(&mut self) -> Result<i32, (i32, String)> {
        let (child_stdio, ours, console) = self.make_stdio().map_err(|e| (125, e))?;
        let opts = CreateOptions {
            bundle: self.args.bundle.clone(),
            console: console
                .as_ref()
                .map(|(_, theirs)| theirs.try_clone())
                .transpose()
                .map_err(|e| (125, e.to_string()))?,
            netns: self
                .netns
                .as_ref()
                .map(|n| n.try_clone())
                .transpose()
                .map_err(|e| (125, e.to_string()))?,
            cgroup_made: self.made.clone(),
            ..Default::default()
        };
        // The init inherits our 0, 1 and 2: point them at the container's
        // stdio for the create, then back at /dev/null.
        let saved: Vec<OwnedFd> = [
            nix::unistd::dup(std::io::stdin()),
            nix::unistd::dup(std::io::stdout()),
            nix::unistd::dup(std::io::stderr()),
        ]
        .into_iter()
        .filter_map(Result::ok)
        .collect();
        for (i, fd) in child_stdio.iter().enumerate() {
            let _ = berth_sys::fd::dup_onto(fd.as_fd(), i as RawFd);
        }
        let created = berth_runtime::create(&self.root, &self.args.id, &opts);
        for (i, fd) in saved.iter().enumerate() {
            let _ = berth_sys::fd::dup_onto(fd.as_fd(), i as RawFd);
        }
        drop(saved);
        drop(child_stdio);
        drop(opts);
        let created = created.map_err(|e| (e.exec_failure_code().unwrap_or(125), e.to_string()))?;
        let mut stdio = ours;
        if let Some((mine, theirs)) = console {
            drop(theirs);
            let mut name = [0u8; 256];
            match berth_sys::fd::recv_with_fd(mine.as_fd(), &mut name) {
                Ok((_, Some(master))) => {
                    stdio.input = master.try_clone().ok();
                    stdio.out = Some(master);
                }
                _ => {
                    self.cleanup_runtime();
                    return Err((125, "the container sent no terminal".into()));
                }
            }
        }
        let pid = created.pid;
        self.pidfd = berth_sys::process::pidfd_open(pid).ok();
        if let Err(e) = berth_runtime::start(&self.root, &self.args.id) {
            self.cleanup_runtime();
            return Err((125, e.to_string()));
        }
        for fd in [&stdio.out, &stdio.err, &stdio.input].into_iter().flatten() {
            set_nonblocking(fd);
        }
        self.stdio = stdio;
        self.pid = Some(pid);
        self.started = Instant::now();
        self.state.status = "running".into();
        self.state.pid = pid as i64;
        self.state.started_at = now();
        self.state.finished_at.clear();
        self.state.exit_code = 0;
        self.state.oom_killed = false;
        self.save_state();
        Ok(pid)
    }

    /// The container's end of its stdio (0, 1, 2), our ends, and for a
    /// terminal the console socket pair (ours, theirs).
    #[allow(clippy::type_complexity)]
    fn make_stdio(&self) -> Result<(Vec<OwnedFd>, Stdio, Option<(OwnedFd, OwnedFd)>), String> {
        let null = || -> Result<OwnedFd, String> {
            File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| format!("/dev/null: {e}"))
        };
        let pipe = || nix::unistd::pipe().map_err(|e| format!("pipe: {e}"));
        if self.args.tty {
            let (a, b) = UnixStream::pair().map_err(|e| format!("console socket: {e}"))?;
            let n = null()?;
            let child = vec![
                n.try_clone().map_err(|e| e.to_string())?,
                n.try_clone().map_err(|e| e.to_string())?,
                n,
            ];
            return Ok((
                child,
                Stdio {
                    out: None,
                    err: None,
                    input: None,
                },
                Some((OwnedFd::from(a), OwnedFd::from(b))),
            ));
        }
        let (in_r, in_w) = if self.args.open_stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (null()?, None)
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        Ok((
            vec![in_r, out_w, err_w],
            Stdio {
                out: Some(out_r),
                err: Some(err_r),
                input: in_w,
            },
            None,
        ))
    }

    /// Serve until the container's init exits; returns its exit code and
    /// whether the kernel's OOM killer struck.
    fn supervise(&mut self) -> (i32, bool) {
        let mut exit: Option<i32> = None;
        let mut drain_until: Option<Instant> = None;
        // 16 KiB a read: enough for log throughput, and few pages resident.
        let mut buf = vec![0u8; 16 << 10];
        // A second after the start, what starting (and the first exchanges
        // with the engine) touched is given back; not at once, so that a
        // container that is over in a moment is not held up by it. After
        // that the loop sleeps until something happens.
        let mut settled = false;
        loop {
            if let Some(until) = drain_until {
                let open = self.stdio.out.is_some() || self.stdio.err.is_some();
                if !open || Instant::now() >= until {
                    break;
                }
            }
            // Decided once per turn: the fast path and the settling go
            // together.
            let settle_now = !settled
                && drain_until.is_none()
                && self.started.elapsed() >= Duration::from_secs(1);
            if settle_now {
                self.join_fast_path();
            }
            // Build the poll set: out, err, listener, clients, signals, pidfd.
            let mut fds: Vec<PollFd> = Vec::new();
            let mut what: Vec<u8> = Vec::new();
            let ev = PollFlags::POLLIN;
            if let Some(fd) = &self.stdio.out {
                fds.push(PollFd::new(fd.as_fd(), ev));
                what.push(b'o');
            }
            if let Some(fd) = &self.stdio.err {
                fds.push(PollFd::new(fd.as_fd(), ev));
                what.push(b'e');
            }
            if let Some(l) = &self.listener {
                fds.push(PollFd::new(l.as_fd(), ev));
                what.push(b'l');
            }
            for c in &self.clients {
                fds.push(PollFd::new(c.stream.as_fd(), ev));
                what.push(b'c');
            }
            fds.push(PollFd::new(self.signals.as_fd(), ev));
            what.push(b's');
            if exit.is_none() {
                if let Some(p) = &self.pidfd {
                    fds.push(PollFd::new(p.as_fd(), ev));
                    what.push(b'p');
                }
            }
            // Settling comes last before the wait, so that what the loop
            // touches after it (every page of code read again comes back
            // with its neighbours) is only the way into poll.
            if settle_now {
                settle();
                settled = true;
            }
            let timeout = if drain_until.is_some() {
                PollTimeout::from(50u16)
            } else if !settled {
                let left = Duration::from_secs(1).saturating_sub(self.started.elapsed());
                // Rounded up: woken before the second, the loop would spin.
                PollTimeout::from(u16::try_from(left.as_micros().div_ceil(1000)).unwrap_or(1000))
            } else {
                PollTimeout::NONE
            };
            match poll(&mut fds, timeout) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
            let ready: Vec<(u8, PollFlags)> = fds
                .iter()
                .zip(&what)
                .map(|(f, w)| (*w, f.revents().unwrap_or(PollFlags::empty())))
                .collect();
            drop(fds);
            let mut client_idx = 0usize;
            let mut dead_clients = Vec::new();
            for (w, re) in ready {
                let hit = !re.is_empty();
                match w {
                    b'o' | b'e' if hit => self.pump(w == b'e', &mut buf),
                    b'l' if hit => self.accept(),
                    b'c' => {
                        if hit && !self.serve_client(client_idx, &mut buf) {
                            dead_clients.push(client_idx);
                        }
                        client_idx += 1;
                    }
                    b's' if hit => {
                        while self.signals.read_signal().ok().flatten().is_some() {}
                        if let Some(c) = self.reap() {
                            exit.get_or_insert(c);
                        }
                    }
                    b'p' if hit => {
                        if let Some(c) = self.reap() {
                            exit.get_or_insert(c);
                        }
                    }
                    _ => {}
                }
            }
            for i in dead_clients.into_iter().rev() {
                self.clients.remove(i);
            }
            if exit.is_none() {
                if let Some(c) = self.reap() {
                    exit = Some(c);
                }
            }
            if exit.is_some() && drain_until.is_none() {
                // The init is gone and so are its namespace's processes:
                // read what they wrote, briefly.
                drain_until = Some(Instant::now() + Duration::from_millis(500));
                self.stdio.input = None;
            }
        }
        self.log.flush();
        self.stdio = Stdio {
            out: None,
            err: None,
            input: None,
        };
        self.pidfd = None;
        self.pid = None;
        let code = exit.unwrap_or(255);
        (code, self.oom_killed())
    }

    /// Put the container's endpoints on their bridges' fast path, once: a
    /// second into its first run, so that the kernel's wait for each
    /// program's attachment (and, at the end, for its removal) is paid by
    /// containers that live long enough to gain from it, and by none that
    /// are over at once. Traffic goes through the bridge meanwhile, and
    /// for good if this fails.
    fn join_fast_path(&mut self) {
        let eps = std::mem::take(&mut self.args.fast_path);
        if let (false, Some(run_root)) = (
            eps.is_empty(),
            self.args.run_dir.parent().and_then(|p| p.parent()),
        ) {
            berth_engine::networks::join_fast_path_at(run_root, &eps);
        }
    }

    /// Reap children; the init's exit code once it exited.
    fn reap(&mut self) -> Option<i32> {
        let pid = self.pid?;
        let mut result = None;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, c)) if p.as_raw() == pid => result = Some(c),
                Ok(WaitStatus::Signaled(p, s, _)) if p.as_raw() == pid => {
                    result = Some(128 + s as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        result
    }

    fn reap_others(&mut self) {
        while let Ok(ws) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if ws == WaitStatus::StillAlive {
                break;
            }
        }
    }

    /// Whether the container's cgroup saw an OOM kill (cgroup v2
    /// memory.events, or v1 memory.oom_control).
    fn oom_killed(&self) -> bool {
        let rel = self.args.cgroup.trim_start_matches('/');
        if rel.is_empty() {
            return false;
        }
        let count = |path: String, key: &str| -> u64 {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        let (k, v) = l.split_once(' ')?;
                        (k == key).then(|| v.trim().parse().ok()).flatten()
                    })
                })
                .unwrap_or(0)
        };
        // cgroup v1's memory controller, or v2 (unified, or pure v2).
        count(
            format!("/sys/fs/cgroup/memory/{rel}/memory.oom_control"),
            "oom_kill",
        ) > 0
            || count(format!("/sys/fs/cgroup/{rel}/memory.events"), "oom_kill") > 0
            || count(
                format!("/sys/fs/cgroup/unified/{rel}/memory.events"),
                "oom_kill",
            ) > 0
    }

    /// Copy available output to the log and streaming clients.
    fn pump(&mut self, is_err: bool, buf: &mut [u8]) {
        let slot = if is_err {
            &self.stdio.err
        } else {
            &self.stdio.out
        };
        let Some(fd) = slot else { return };
        let n = match nix::unistd::read(fd, buf) {
            Ok(0) => {
                self.close_stream(is_err);
                return;
            }
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => return,
            // EIO: the terminal's last writer is gone.
            Err(_) => {
                self.close_stream(is_err);
                return;
            }
        };
        let data = &buf[..n];
        self.log.write(is_err as usize, data);
        let kind = if is_err { Kind::Stderr } else { Kind::Stdout };
        let f = proto::frame(kind, data);
        self.clients
            .retain_mut(|c| !c.streaming || write_bounded(&c.stream, &f));
    }

    fn close_stream(&mut self, is_err: bool) {
        if is_err {
            self.stdio.err = None;
        } else {
            if self.args.tty {
                self.stdio.input = None;
            }
            self.stdio.out = None;
        }
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        while let Ok((s, _)) = l.accept() {
            let _ = s.set_nonblocking(true);
            self.clients.push(Client {
                stream: s,
                dec: Decoder::default(),
                streaming: false,
                claims_removal: false,
            });
        }
    }

    /// Read a client's frames; false when it is gone.
    fn serve_client(&mut self, i: usize, buf: &mut [u8]) -> bool {
        let n = match self.clients[i].stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        };
        self.clients[i].dec.push(&buf[..n]);
        loop {
            let next = self.clients[i].dec.next_frame();
            let (kind, payload) = match next {
                Ok(Some(f)) => f,
                Ok(None) => return true,
                Err(_) => return false,
            };
            match kind {
                Kind::Stdin => {
                    if let Some(fd) = &self.stdio.input {
                        write_bounded(fd, &payload);
                    }
                }
                Kind::StdinEof if !self.args.tty => self.stdio.input = None,
                Kind::Resize if payload.len() == 4 => {
                    if let (true, Some(fd)) = (self.args.tty, &self.stdio.input) {
                        let rows = u16::from_be_bytes([payload[0], payload[1]]);
                        let cols = u16::from_be_bytes([payload[2], payload[3]]);
                        let _ = berth_sys::pty::set_winsize(fd.as_fd(), rows, cols);
                    }
                }
                Kind::Signal if payload.len() == 4 => {
                    let sig = i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    let _ = berth_runtime::kill(&self.root, &self.args.id, sig, false);
                }
                Kind::ClaimRemoval => self.clients[i].claims_removal = true,
                Kind::Stream => self.clients[i].streaming = true,
                _ => {}
            }
        }
    }

    fn send_exit(&mut self, code: i32, oom: bool) {
        let f = proto::frame(Kind::Exit, &proto::exit_payload(code, oom));
        self.clients.retain_mut(|c| write_bounded(&c.stream, &f));
    }

    /// Tell the clients that claimed the removal that the runtime's state
    /// is gone, and that nothing more comes (our side shut down).
    fn send_cleaned(&mut self) {
        let f = proto::frame(Kind::Cleaned, &[]);
        for c in self.clients.iter().filter(|c| c.claims_removal) {
            if write_bounded(&c.stream, &f) {
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
            }
        }
    }
}

/// Write all of `data` to a non-blocking descriptor (a client, or the
/// container's stdin), waiting while it is full, for 5 s at most; false
/// when it could not all be written (the reader is gone or stuck).
fn write_bounded(fd: impl AsFd, mut data: &[u8]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !data.is_empty() {
        match nix::unistd::write(&fd, data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EAGAIN) => {
                if Instant::now() >= deadline {
                    return false;
                }
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(100u16));
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Give back memory that starting needed and supervising does not: the
/// heap's free pages, and the pages of code, read-only data and stack
/// touched only while starting.
fn settle() {
    let _ = berth_sys::process::drop_startup_pages();
    berth_sys::process::trim_heap();
}

/// Wait until the peer of a socket hangs up (what it still sends is read
/// and dropped), for `limit` at most.
fn wait_hangup(s: &UnixStream, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => {}
            Ok(_) => {
                let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT;
                match nix::sys::socket::recv(s.as_raw_fd(), &mut buf, flags) {
                    Ok(0) => return,
                    Ok(_) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return,
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}
