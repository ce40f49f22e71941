//! Harness of the runtime conformance suite.
//!
//! Every test builds its own bundle (a busybox rootfs made from Debian's `busybox-static`
//! and a `config.json` made with serde_json), uses its own `--root` state directory and a
//! unique container id and cgroups path, and holds a [`Ctr`] guard that runs
//! `delete --force` and removes its directories when dropped, so that a failing test
//! leaves no container, mount or cgroup behind.
//!
//! The runtime under test is `$BERTH_TEST_RUNTIME` when set (for example
//! `/usr/sbin/runc`, to check the tests themselves), else berth's `berth-runtime`.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Upper bound for one runtime invocation; a runtime that hangs fails the test.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for a state change (start → running, kill → stopped, …).
pub const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// the runtime under test
// ---------------------------------------------------------------------------------------

/// Path of the runtime binary under test.
pub fn runtime_bin() -> PathBuf {
    match std::env::var_os("BERTH_TEST_RUNTIME") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_berth-runtime")),
    }
}

/// File name of the runtime binary under test (`berth-runtime`, `runc`, `crun`).
pub fn runtime_name() -> String {
    runtime_bin()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether the runtime under test is berth's (decided by the binary's file name).
pub fn is_berth() -> bool {
    runtime_name().starts_with("berth")
}

/// True when the tests may run. Panics (the test FAILS) when not root, unless
/// `BERTH_SKIP_ROOT_TESTS=1`, in which case it prints "skipped: needs root" and returns
/// false. Also fails clearly when the runtime binary is missing.
pub fn root_or_skip() -> bool {
    if !nix::unistd::geteuid().is_root() {
        if std::env::var("BERTH_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
            eprintln!("skipped: needs root");
            return false;
        }
        panic!(
            "the runtime conformance tests need root (real namespaces, mounts and cgroups); \
             run them as root, or set BERTH_SKIP_ROOT_TESTS=1 to skip them"
        );
    }
    let bin = runtime_bin();
    assert!(
        bin.is_file(),
        "runtime binary {} does not exist (set BERTH_TEST_RUNTIME to a runtime binary)",
        bin.display()
    );
    true
}

/// Output of one command.
#[derive(Debug)]
pub struct Out {
    pub cmd: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Exit code; 128+N when killed by signal N.
    pub fn code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        match self.status.code() {
            Some(c) => c,
            None => 128 + self.status.signal().unwrap_or(0),
        }
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the whole output unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        if !self.success() {
            panic!("command failed: {self}");
        }
        self
    }

    /// Panics with the whole output unless the command failed.
    #[track_caller]
    pub fn fails(self) -> Self {
        if self.success() {
            panic!("command should have failed: {self}");
        }
        self
    }

    /// Lines of stdout, trimmed of `\r`.
    pub fn lines(&self) -> Vec<String> {
        self.stdout
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect()
    }

    /// Stdout trimmed.
    pub fn out(&self) -> &str {
        self.stdout.trim()
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n  exit: {}\n  stdout: {:?}\n  stderr: {:?}",
            self.cmd,
            self.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `cmd` with stdout and stderr going to files under `io_dir` (files, not pipes: a
/// detached container keeps its stdio open long after the runtime exits), stdin from
/// `stdin` (or /dev/null), and kills it after `timeout`.
#[track_caller]
pub fn run_cmd(mut cmd: Command, io_dir: &Path, stdin: Option<&[u8]>, timeout: Duration) -> Out {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    fs::create_dir_all(io_dir).expect("create io dir");
    let out_p = io_dir.join(format!("{n}.stdout"));
    let err_p = io_dir.join(format!("{n}.stderr"));
    cmd.stdout(fs::File::create(&out_p).expect("create stdout file"));
    cmd.stderr(fs::File::create(&err_p).expect("create stderr file"));
    match stdin {
        Some(data) => {
            let in_p = io_dir.join(format!("{n}.stdin"));
            fs::write(&in_p, data).expect("write stdin file");
            cmd.stdin(fs::File::open(&in_p).expect("open stdin file"));
        }
        None => {
            cmd.stdin(Stdio::null());
        }
    }
    let desc = describe(&cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
    let start = Instant::now();
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => panic!("wait for {desc}: {e}"),
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "timed out after {timeout:?}: {desc}\n  stdout: {:?}\n  stderr: {:?}",
                fs::read_to_string(&out_p).unwrap_or_default(),
                fs::read_to_string(&err_p).unwrap_or_default()
            );
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    Out {
        cmd: desc,
        status,
        stdout: String::from_utf8_lossy(&fs::read(&out_p).unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&fs::read(&err_p).unwrap_or_default()).into_owned(),
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Polls `f` every few milliseconds until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut nap = Duration::from_millis(2);
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------------------
// busybox rootfs
// ---------------------------------------------------------------------------------------

const HOST_BUSYBOX: &str = "/bin/busybox";

/// A directory holding one copy of busybox and its applet list, shared by all tests (and
/// by concurrent test processes): made once in a temp dir, then renamed into place.
fn busybox_cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let meta = fs::metadata(HOST_BUSYBOX)
            .unwrap_or_else(|e| panic!("{HOST_BUSYBOX}: {e} (install Debian's busybox-static)"));
        let base = std::env::temp_dir();
        let dir = base.join(format!(
            "berth-conformance-busybox-{}-{}",
            meta.len(),
            meta.mtime()
        ));
        if dir.join("applets").is_file() {
            return dir;
        }
        let tmp = tempfile::Builder::new()
            .prefix("berth-conformance-busybox-new")
            .tempdir_in(&base)
            .expect("temp dir for busybox cache");
        fs::copy(HOST_BUSYBOX, tmp.path().join("busybox")).expect("copy busybox");
        fs::set_permissions(
            tmp.path().join("busybox"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod busybox");
        let list = Command::new(HOST_BUSYBOX)
            .arg("--list-full")
            .output()
            .expect("busybox --list-full");
        assert!(list.status.success(), "busybox --list-full failed");
        assert!(
            String::from_utf8_lossy(&list.stdout).contains("bin/sh"),
            "{HOST_BUSYBOX} has no sh applet: is it busybox-static?"
        );
        fs::write(tmp.path().join("applets"), &list.stdout).expect("write applet list");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let tmp = tmp.keep();
        if fs::rename(&tmp, &dir).is_err() {
            // Another test process won the race: use its copy.
            let _ = fs::remove_dir_all(&tmp);
        }
        assert!(
            dir.join("applets").is_file(),
            "busybox cache {} missing",
            dir.display()
        );
        dir
    })
}

/// Fills `rootfs` with busybox (hard-linked from the cache), a symlink per applet, the
/// usual directories, and /etc/passwd and /etc/group with root and `user` (1000).
pub fn make_rootfs(rootfs: &Path) {
    let cache = busybox_cache();
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "proc",
        "sys",
        "dev",
        "etc",
        "root",
        "home/user",
        "tmp",
        "var",
    ] {
        fs::create_dir_all(rootfs.join(d)).expect("mkdir in rootfs");
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    fs::set_permissions(rootfs, fs::Permissions::from_mode(0o755)).expect("chmod");
    let bb = rootfs.join("bin/busybox");
    if fs::hard_link(cache.join("busybox"), &bb).is_err() {
        fs::copy(cache.join("busybox"), &bb).expect("copy busybox");
    }
    let applets = fs::read_to_string(cache.join("applets")).expect("read applet list");
    for a in applets.lines() {
        let a = a.trim().trim_start_matches('/');
        if a.is_empty() || !a.contains('/') || a == "bin/busybox" {
            continue;
        }
        let p = rootfs.join(a);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir applet dir");
        }
        let _ = std::os::unix::fs::symlink("/bin/busybox", &p);
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n\
         nobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("write passwd");
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\ntty:x:5:\nuser:x:1000:\nnogroup:x:65534:\n",
    )
    .expect("write group");
    std::os::unix::fs::chown(rootfs.join("home/user"), Some(1000), Some(1000)).expect("chown");
}

// ---------------------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------------------

/// Docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The base config, like `runc spec` produces, with a non-terminal `sh`, a writable root,
/// Docker's default capabilities (no inheritable or ambient ones), a cgroup namespace and
/// a per-test cgroupsPath.
pub fn base_config(cgroups_path: &str) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": [PATH_ENV, "HOME=/root"],
            "cwd": "/",
            "capabilities": {
                "bounding": DEFAULT_CAPS,
                "effective": DEFAULT_CAPS,
                "permitted": DEFAULT_CAPS
            },
            "rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 } ],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "berth-test",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
            "cgroupsPath": cgroups_path,
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// `["sh", "-c", script]`.
pub fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

/// Removes the namespace of `kind` from the config.
pub fn drop_namespace(cfg: &mut Value, kind: &str) {
    if let Some(ns) = cfg["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != kind);
    }
}

/// Adds (or replaces) a namespace entry.
pub fn set_namespace(cfg: &mut Value, entry: Value) {
    let kind = entry["type"].clone();
    let ns = cfg["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces array");
    ns.retain(|n| n["type"] != kind);
    ns.push(entry);
}

/// Removes the mount with this destination.
pub fn drop_mount(cfg: &mut Value, dest: &str) {
    if let Some(m) = cfg["mounts"].as_array_mut() {
        m.retain(|m| m["destination"] != dest);
    }
}

pub fn add_mount(cfg: &mut Value, mount: Value) {
    cfg["mounts"]
        .as_array_mut()
        .expect("mounts array")
        .push(mount);
}

// ---------------------------------------------------------------------------------------
// the container guard
// ---------------------------------------------------------------------------------------

/// One test container: its temp dir (bundle, state root, io files, host-side scratch),
/// its id and cgroups path. Dropping it runs `delete --force` and removes everything.
pub struct Ctr {
    pub id: String,
    pub cgroups_path: String,
    pub config: Value,
    base: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

static CTR_SEQ: AtomicU32 = AtomicU32::new(0);

/// A short unique name: `bt-<tag>-<pid>-<n>`.
pub fn unique_id(tag: &str) -> String {
    let n = CTR_SEQ.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(24)
        .collect();
    format!("bt-{tag}-{}-{n}", std::process::id())
}

impl Ctr {
    /// A container with the base config.
    pub fn new(tag: &str) -> Ctr {
        Ctr::with(tag, |_| {})
    }

    /// A container whose base config is changed by `tweak` (then written to config.json).
    pub fn with(tag: &str, tweak: impl FnOnce(&mut Value)) -> Ctr {
        let id = unique_id(tag);
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{id}."))
            .tempdir()
            .expect("temp dir");
        let base = tmp.path().to_path_buf();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).expect("chmod base");
        for d in ["bundle", "state", "io", "host"] {
            fs::create_dir(base.join(d)).expect("mkdir");
        }
        fs::set_permissions(base.join("state"), fs::Permissions::from_mode(0o700))
            .expect("chmod state");
        make_rootfs(&base.join("bundle/rootfs"));
        let cgroups_path = format!("/berth-test/{id}");
        let mut config = base_config(&cgroups_path);
        tweak(&mut config);
        let c = Ctr {
            id,
            cgroups_path,
            config,
            base,
            tmp: Some(tmp),
        };
        c.write_config();
        c
    }

    /// A container running `sh -c script`.
    pub fn sh(tag: &str, script: &str, tweak: impl FnOnce(&mut Value)) -> Ctr {
        Ctr::with(tag, |c| {
            c["process"]["args"] = sh(script);
            tweak(c)
        })
    }

    pub fn write_config(&self) {
        fs::write(
            self.bundle().join("config.json"),
            serde_json::to_vec_pretty(&self.config).expect("serialize config"),
        )
        .expect("write config.json");
    }

    /// Changes the config and rewrites config.json.
    pub fn tweak(&mut self, f: impl FnOnce(&mut Value)) {
        f(&mut self.config);
        self.write_config();
    }

    /// Replaces config.json by `text` as is (for malformed configs).
    pub fn write_raw_config(&self, text: &str) {
        fs::write(self.bundle().join("config.json"), text).expect("write config.json");
    }

    pub fn base(&self) -> &Path {
        &self.base
    }
    pub fn bundle(&self) -> PathBuf {
        self.base.join("bundle")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.base.join("bundle/rootfs")
    }
    /// The `--root` state directory of this test.
    pub fn state_root(&self) -> PathBuf {
        self.base.join("state")
    }
    /// A host-side scratch directory of this test (not inside the rootfs).
    pub fn host_dir(&self) -> PathBuf {
        self.base.join("host")
    }
    pub fn io_dir(&self) -> PathBuf {
        self.base.join("io")
    }

    /// `runtime --root <state> args…`, run in the bundle directory.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(runtime_bin());
        cmd.arg("--root").arg(self.state_root()).args(args);
        cmd.current_dir(self.bundle());
        cmd
    }

    /// Runs the runtime with `args`.
    #[track_caller]
    pub fn rt(&self, args: &[&str]) -> Out {
        self.run_cmd(self.cmd(args), None)
    }

    /// Runs the runtime with `args` and `stdin`.
    #[track_caller]
    pub fn rt_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        self.run_cmd(self.cmd(args), Some(stdin))
    }

    #[track_caller]
    pub fn run_cmd(&self, cmd: Command, stdin: Option<&[u8]>) -> Out {
        run_cmd(cmd, &self.io_dir(), stdin, TIMEOUT)
    }

    /// `create --bundle <bundle> <id>` plus `extra` options before the id.
    #[track_caller]
    pub fn create_with(&self, extra: &[&str]) -> Out {
        let b = self.bundle();
        let mut args = vec!["create", "--bundle", b.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        args.push(&self.id);
        self.rt(&args)
    }

    #[track_caller]
    pub fn create(&self) -> Out {
        self.create_with(&[])
    }

    #[track_caller]
    pub fn start(&self) -> Out {
        self.rt(&["start", &self.id])
    }

    /// `run --bundle <bundle> <id>` in the foreground: its exit code is the process's.
    #[track_caller]
    pub fn run(&self) -> Out {
        self.run_with(&[])
    }

    #[track_caller]
    pub fn run_with(&self, extra: &[&str]) -> Out {
        let b = self.bundle();
        let mut args = vec!["run", "--bundle", b.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        args.push(&self.id);
        self.rt(&args)
    }

    /// create + start, then waits for "running".
    #[track_caller]
    pub fn create_start(&self) {
        self.create().ok();
        self.start().ok();
    }

    /// `state <id>` parsed, or None when the runtime says it fails.
    #[track_caller]
    pub fn state(&self) -> Option<Value> {
        let o = self.rt(&["state", &self.id]);
        if !o.success() {
            return None;
        }
        Some(
            serde_json::from_str(&o.stdout)
                .unwrap_or_else(|e| panic!("state output is not JSON ({e}): {o}")),
        )
    }

    #[track_caller]
    pub fn status(&self) -> Option<String> {
        self.state()
            .map(|s| s["status"].as_str().unwrap_or_default().to_string())
    }

    /// The container process's pid on the host, from `state`.
    #[track_caller]
    pub fn pid(&self) -> i32 {
        let s = self.state().expect("state of an existing container");
        s["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("no pid in state {s}")) as i32
    }

    /// Waits until `state` reports `want`.
    #[track_caller]
    pub fn wait_status(&self, want: &str) {
        let mut last = None;
        let ok = wait_until(WAIT, || {
            last = self.status();
            last.as_deref() == Some(want)
        });
        assert!(
            ok,
            "container {} never reached status {want:?} (last: {last:?})",
            self.id
        );
    }

    #[track_caller]
    pub fn kill(&self, sig: &str) -> Out {
        self.rt(&["kill", &self.id, sig])
    }

    #[track_caller]
    pub fn delete(&self) -> Out {
        self.rt(&["delete", &self.id])
    }

    /// `delete --force <id>`, which must succeed.
    #[track_caller]
    pub fn delete_force(&self) -> Out {
        self.rt(&["delete", "--force", &self.id]).ok()
    }

    /// `exec <id> args…`.
    #[track_caller]
    pub fn exec(&self, args: &[&str]) -> Out {
        self.exec_with(&[], args)
    }

    /// `exec opts… <id> args…`.
    #[track_caller]
    pub fn exec_with(&self, opts: &[&str], args: &[&str]) -> Out {
        let mut a = vec!["exec"];
        a.extend_from_slice(opts);
        a.push(&self.id);
        a.extend_from_slice(args);
        self.rt(&a)
    }

    /// Reads a file of the rootfs from the host side.
    pub fn read_rootfs(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.rootfs().join(rel.trim_start_matches('/'))).ok()
    }

    /// Waits until a file of the rootfs exists and ends with a newline (the container
    /// writes it with `echo`), and returns it.
    #[track_caller]
    pub fn wait_rootfs_file(&self, rel: &str) -> String {
        let mut text = None;
        let ok = wait_until(WAIT, || {
            text = self.read_rootfs(rel).filter(|t| t.ends_with('\n'));
            text.is_some()
        });
        assert!(ok, "container {} never wrote {rel}", self.id);
        text.unwrap_or_default()
    }

    /// The cgroup directories (one per mounted hierarchy) of this container's
    /// cgroupsPath that exist now.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_mounts()
            .into_iter()
            .map(|m| m.join(self.cgroups_path.trim_start_matches('/')))
            .filter(|p| p.exists())
            .collect()
    }

    /// Host path of a cgroup file of this container: `v1file` in the v1 hierarchy of
    /// `controller` when there is one, else `v2file` in the unified hierarchy.
    pub fn cgroup_file(&self, controller: &str, v1file: &str, v2file: &str) -> PathBuf {
        let rel = self.cgroups_path.trim_start_matches('/');
        match cgroup_v1_mount(controller) {
            Some(m) => m.join(rel).join(v1file),
            None => cgroup_v2_mount()
                .expect("no cgroup hierarchy mounted")
                .join(rel)
                .join(v2file),
        }
    }

    /// Entries of the state root whose name contains the container id, at any depth.
    pub fn state_entries(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(&self.state_root(), 4, &mut |p| {
            if p.file_name()
                .map(|n| n.to_string_lossy().contains(&self.id))
                == Some(true)
            {
                found.push(p.to_path_buf());
            }
        });
        found
    }

    /// Mounts on the host that lie under this test's directories.
    pub fn host_mounts(&self) -> Vec<String> {
        let base = self.base.to_string_lossy().into_owned();
        host_mountinfo()
            .into_iter()
            .filter(|m| m.mount_point.starts_with(&base) || m.root.starts_with(&base))
            .map(|m| m.mount_point)
            .collect()
    }

    /// Asserts that this container left nothing behind: `state` fails, no entry for it
    /// under the state root, no cgroup directory, no mount under the test's dirs.
    #[track_caller]
    pub fn assert_nothing_left(&self) {
        let st = self.rt(&["state", &self.id]);
        assert!(!st.success(), "container {} still exists: {st}", self.id);
        let entries = self.state_entries();
        assert!(entries.is_empty(), "state left behind: {entries:?}");
        let cg = self.cgroup_dirs();
        assert!(cg.is_empty(), "cgroup directories left behind: {cg:?}");
        let mounts = self.host_mounts();
        assert!(
            mounts.is_empty(),
            "mounts left behind on the host: {mounts:?}"
        );
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        // Best effort, never panics: kill and delete the container, detach any mount the
        // runtime leaked under our dirs (so removing them cannot reach into a host dir),
        // then remove the dirs.
        if runtime_bin().is_file() && nix::unistd::geteuid().is_root() {
            let mut cmd = Command::new(runtime_bin());
            cmd.arg("--root")
                .arg(self.state_root())
                .args(["delete", "--force", &self.id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Ok(mut child) = cmd.spawn() {
                let done = wait_until(Duration::from_secs(20), || {
                    matches!(child.try_wait(), Ok(Some(_)))
                });
                if !done {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            let mut leaked = self.host_mounts();
            leaked.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in &leaked {
                eprintln!("warning: detaching mount {m} left on the host by the runtime");
                let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
            // Cgroups of a leaked container: remove the empty ones (deepest first).
            for d in self.cgroup_dirs() {
                let _ = fs::remove_dir(&d);
            }
            // The shared /berth-test parent goes once the last test is done
            // with it (rmdir fails harmlessly while other tests still use it).
            for m in cgroup_mounts() {
                let _ = fs::remove_dir(m.join("berth-test"));
            }
        }
        if std::env::var("BERTH_TEST_KEEP").as_deref() == Ok("1") && std::thread::panicking() {
            if let Some(t) = self.tmp.take() {
                eprintln!("keeping {}", t.keep().display());
            }
        }
        // TempDir removes the directory when dropped.
    }
}

fn walk(dir: &Path, depth: u32, f: &mut dyn FnMut(&Path)) {
    if depth == 0 {
        return;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            f(&p);
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&p, depth - 1, f);
            }
        }
    }
}

/// Runs `sh -c script` in a fresh container changed by `tweak`, in the foreground.
#[track_caller]
pub fn run_sh(tag: &str, script: &str, tweak: impl FnOnce(&mut Value)) -> Out {
    Ctr::sh(tag, script, tweak).run()
}

/// Runs `args` in a fresh container changed by `tweak`, in the foreground.
#[track_caller]
pub fn run_in_container(tag: &str, tweak: impl FnOnce(&mut Value), args: &[&str]) -> Out {
    Ctr::with(tag, |c| {
        c["process"]["args"] = json!(args);
        tweak(c)
    })
    .run()
}

// ---------------------------------------------------------------------------------------
// mounts and cgroups
// ---------------------------------------------------------------------------------------

/// One line of /proc/<pid>/mountinfo.
#[derive(Debug, Clone)]
pub struct MountInfo {
    pub root: String,
    pub mount_point: String,
    /// Per-mount options (`rw,nosuid,…`).
    pub opts: String,
    /// Optional fields (`shared:N master:N`).
    pub optional: String,
    pub fstype: String,
    pub source: String,
    /// Super-block options.
    pub super_opts: String,
}

impl MountInfo {
    pub fn has_opt(&self, o: &str) -> bool {
        self.opts.split(',').any(|x| x == o)
    }
    pub fn has_super_opt(&self, o: &str) -> bool {
        self.super_opts.split(',').any(|x| x == o)
    }
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let d = |k: usize| u32::from(b[i + k] - b'0');
            out.push((d(1) * 64 + d(2) * 8 + d(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let mut v = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 {
            continue;
        }
        v.push(MountInfo {
            root: unescape(l[3]),
            mount_point: unescape(l[4]),
            opts: l[5].to_string(),
            optional: l[6..].join(" "),
            fstype: r[0].to_string(),
            source: unescape(r[1]),
            super_opts: r[2].to_string(),
        });
    }
    v
}

pub fn host_mountinfo() -> Vec<MountInfo> {
    parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// The last mount at `path` in a mountinfo listing (the one that is visible).
pub fn mount_at<'a>(mounts: &'a [MountInfo], path: &str) -> Option<&'a MountInfo> {
    mounts.iter().rev().find(|m| m.mount_point == path)
}

/// Mount points of all cgroup hierarchies of the host.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    host_mountinfo()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| PathBuf::from(m.mount_point))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Mount point of the v1 hierarchy of `controller`, if any.
pub fn cgroup_v1_mount(controller: &str) -> Option<PathBuf> {
    host_mountinfo()
        .into_iter()
        .find(|m| m.fstype == "cgroup" && m.has_super_opt(controller))
        .map(|m| PathBuf::from(m.mount_point))
}

pub fn cgroup_v2_mount() -> Option<PathBuf> {
    host_mountinfo()
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| PathBuf::from(m.mount_point))
}

/// True when the host runs cgroup v2 only.
pub fn cgroup_v2_only() -> bool {
    !host_mountinfo().iter().any(|m| m.fstype == "cgroup")
}

// ---------------------------------------------------------------------------------------
// capabilities
// ---------------------------------------------------------------------------------------

pub const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Bit mask of capability names, as /proc/<pid>/status shows it.
pub fn cap_mask(names: &[&str]) -> u64 {
    names.iter().fold(0, |m, n| {
        let i = CAP_NAMES
            .iter()
            .position(|c| c == n)
            .unwrap_or_else(|| panic!("unknown capability {n}"));
        m | (1u64 << i)
    })
}

/// Capability names of a mask, for messages.
pub fn cap_names(mask: u64) -> Vec<&'static str> {
    CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// The value of `Key:` in a /proc/<pid>/status text.
pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim())
    })
}

/// A hex capability mask field of a /proc/<pid>/status text.
#[track_caller]
pub fn status_caps(status: &str, key: &str) -> u64 {
    let v = status_field(status, key).unwrap_or_else(|| panic!("no {key} in {status}"));
    u64::from_str_radix(v, 16).unwrap_or_else(|e| panic!("{key}: {v}: {e}"))
}

/// Reads a host file, trimmed.
pub fn read_trim(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// Writes a file with 0755 permissions (for scripts used as hooks).
pub fn write_script(p: &Path, text: &str) {
    let mut f = fs::File::create(p).expect("create script");
    f.write_all(text.as_bytes()).expect("write script");
    drop(f);
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).expect("chmod script");
}

/// The runtime's `features` output, if it has that command.
pub fn features() -> Option<Value> {
    let o = Command::new(runtime_bin()).arg("features").output().ok()?;
    if !o.status.success() {
        return None;
    }
    serde_json::from_slice(&o.stdout).ok()
}

/// Whether the runtime supports a namespace kind, per `features` (berth: always asked to).
pub fn supports_namespace(kind: &str) -> bool {
    if is_berth() {
        return true;
    }
    match features() {
        Some(f) => f["linux"]["namespaces"]
            .as_array()
            .map(|a| a.iter().any(|n| n == kind))
            .unwrap_or(true),
        None => true,
    }
}

/// Whether this test process has capability `name` in its effective set (the sandbox
/// this suite runs in may lack some, e.g. CAP_SYS_RESOURCE).
pub fn host_has_cap(name: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status_caps(&status, "CapEff") & cap_mask(&[name]) != 0
}

/// True when the runtime under test is `name` (e.g. "runc") older than `major.minor`,
/// per its `--version`: for features that runtime gained later (runc 1.2: domainname,
/// time namespace).
pub fn runtime_older_than(name: &str, major: u32, minor: u32) -> bool {
    if runtime_name() != name {
        return false;
    }
    let Ok(o) = Command::new(runtime_bin()).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&o.stdout);
    let Some(ver) = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
    else {
        return false;
    };
    let mut it = ver
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) < (major, minor)
}

/// Returns from the test when the runtime under test is known to lack a feature.
macro_rules! skip_if_older {
    ($name:expr, $maj:expr, $min:expr, $what:expr) => {
        if $crate::harness::runtime_older_than($name, $maj, $min) {
            eprintln!("skipped: {} {}.{}+ needed for {}", $name, $maj, $min, $what);
            return;
        }
    };
}
