//! Containers through the `berth` binary: run, create/start, ps, logs,
//! stop/kill/rm, wait, inspect, stdio and terminals, restart policies,
//! names, binds, and what happens when a monitor dies.
//!
//! Each test has its own --root and --run-root; the busybox image is made
//! from Debian's busybox-static once (a tarball in the target dir) and
//! imported into each store. Root is required: without it these tests fail
//! (BERTH_SKIP_ROOT_TESTS=1 skips them).

mod common;

use common::{busybox_tarball, need_root, text, Store};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[test]
fn run_rm_hello_world() {
    if !need_root() {
        return;
    }
    let s = Store::new();
    let out = s.ok(&["run", "--rm", "hello-world"]);
    assert!(out.contains("its process ID is 1"), "{out}");
    assert_eq!(s.ok(&["ps", "-aq"]), "", "--rm removed it");
}

/// The monitor of a container whose init is `pid`: the init's parent.
fn monitor_of(pid: i64) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether process `pid` exists and has not exited (a zombie has: its
/// parent, outside any test's reach, may not reap it at once).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|st| st.rsplit(')').next().unwrap().split_whitespace().next() != Some("Z"))
}

/// The `Cpus_allowed_list` of process `pid` ("self" for ours).
fn cpus_allowed(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Cpus_allowed_list:")
                .map(|v| v.trim().to_string())
        })
        .unwrap()
}

/// Names in `dir` starting with `prefix`.
fn entries_with(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn run_rm_leaves_nothing_behind() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    let o = s.run(&[
        "run",
        "--rm",
        "-v",
        "/data",
        "busybox",
        "sh",
        "-c",
        "hostname; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let short = text(&o.stdout).trim().to_string();
    assert_eq!(short.len(), 12, "{short}");
    // Once the command has returned: no row, no anonymous volume, no run
    // or runtime state, no cgroup, no mount.
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    for d in [s.run.join("containers"), s.run.join("runtime")] {
        assert!(
            entries_with(&d, &short).is_empty(),
            "left in {}",
            d.display()
        );
    }
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = h.path().join("berth");
        assert!(
            entries_with(&d, &short).is_empty(),
            "left in {}",
            d.display()
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&short), "{mounts}");
    // Its directory went to the trash, which the monitor empties after
    // the command hung up.
    let containers = s.root().join("containers");
    assert!(entries_with(&containers, &short).is_empty());
    let trash = containers.join(".trash");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !entries_with(&trash, &short).is_empty() {
        assert!(std::time::Instant::now() < deadline, "left in the trash");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // What a killed monitor would leave there goes when a store opens.
    std::fs::create_dir_all(trash.join("0123abcd/upper/x")).unwrap();
    s.ok(&["ps"]);
    assert!(entries_with(&trash, "").is_empty());
}

/// `run` has the monitor make the container's cgroup, with its limits,
/// while it makes the container; a monitor whose container never comes
/// (the command failed) removes it before it exits.
#[test]
fn a_cgroup_made_ahead_goes_when_its_container_never_comes() {
    if !need_root() {
        return;
    }
    let s = Store::new();
    let paths = berth_engine::containers::Paths {
        root: s.root().to_path_buf(),
        run_root: s.run.clone(),
        monitor: PathBuf::from(env!("CARGO_BIN_EXE_berth-monitor")),
        berth: vec![env!("CARGO_BIN_EXE_berth").to_string()],
    };
    let mut cfg = berth_engine::config::ContainerConfig::default();
    cfg.resources.memory = Some(48 << 20);
    cfg.resources.pids_limit = Some(77);
    let id = berth_engine::containers::new_id().unwrap();
    let mut monitor = berth_engine::containers::prestart_monitor(&paths, false).unwrap();
    monitor.prepare(&id, &cfg);
    let dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path().join("berth").join(&id))
        .collect();
    // A v1 controller's file, or the cgroup2 one.
    let limit = |controller: &str, v1: &str, v2: &str| {
        let root = Path::new("/sys/fs/cgroup");
        let at = |h: &Path, file: &str| h.join("berth").join(&id).join(file);
        std::fs::read_to_string(at(&root.join(controller), v1))
            .or_else(|_| std::fs::read_to_string(at(root, v2)))
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while limit("pids", "pids.max", "pids.max") != "77" {
        assert!(Instant::now() < deadline, "no cgroup made for {id}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        limit("memory", "memory.limit_in_bytes", "memory.max"),
        (48u64 << 20).to_string()
    );
    // The command gives up: the monitor reads the end of its arguments,
    // removes the cgroup and exits (dropping the handle waits for it).
    drop(monitor);
    for d in &dirs {
        assert!(!d.exists(), "{} left", d.display());
    }
}

/// The file system type mounted at `path`, if something is mounted there.
fn mounted_at(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_str().unwrap();
    mounts.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let dash = f.iter().position(|x| *x == "-")?;
        (f[4] == want).then(|| f[dash + 1].to_string())
    })
}

fn xattrs(path: &Path) -> Vec<Vec<u8>> {
    berth_sys::xattr::llist(path).unwrap()
}

#[test]
fn removed_containers_leave_clean_spare_directories() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    let containers = s.root().join("containers");
    let spares = containers.join(".spare");
    // A container that leaves files, a log and overlay's marks behind.
    let first = s
        .ok(&[
            "run",
            "-d",
            "busybox",
            "sh",
            "-c",
            "mkdir -p /a/b && echo x > /a/b/f && rm /bin/true && echo out && sleep 100",
        ])
        .trim()
        .to_string();
    // The run root is a tmpfs berth mounted: nothing of a start on disk.
    assert_eq!(mounted_at(&s.run).as_deref(), Some("tmpfs"));
    s.ok(&["rm", "-f", &first]);
    assert_eq!(entries_with(&spares, ""), vec![first.clone()]);
    // The next container takes it, emptied: its own log, an upper dir as
    // new, nothing of the first's in its file system.
    let second = s
        .ok(&["create", "busybox", "ls", "/", "/bin/true"])
        .trim()
        .to_string();
    assert!(entries_with(&spares, "").is_empty(), "the spare was taken");
    let dir = containers.join(&second);
    let mut names = entries_with(&dir, "");
    names.sort();
    assert_eq!(
        names,
        [format!("{second}-json.log"), "upper".into(), "work".into()]
    );
    let upper = dir.join("upper");
    assert_eq!(entries_with(&upper, "").len(), 0);
    assert!(xattrs(&upper).is_empty(), "{:?}", xattrs(&upper));
    assert_eq!(
        std::fs::metadata(dir.join(format!("{second}-json.log")))
            .unwrap()
            .len(),
        0
    );
    let o = s.ok(&["start", "-a", &second]);
    assert!(o.contains("/bin/true"), "{o}");
    assert!(!o.lines().any(|l| l == "a"), "{o}");
    assert_eq!(s.ok(&["logs", &second]), o);
    assert_eq!(s.ok(&["diff", &second]), "");
    s.ok(&["rm", &second]);
    // A container that changed its / itself: its upper dir is not kept.
    let third = s
        .ok(&["run", "-d", "busybox", "chmod", "700", "/"])
        .trim()
        .to_string();
    s.ok(&["wait", &third]);
    s.ok(&["rm", &third]);
    let fourth = s.ok(&["create", "busybox", "true"]).trim().to_string();
    let m = std::fs::metadata(containers.join(&fourth).join("upper")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777,
        0o755
    );
    s.ok(&["rm", &fourth]);
    // A --rm container's (a volatile overlay, whose mark would fail the
    // next mount) is recycled by its monitor, and the next run mounts it.
    s.ok(&["run", "--rm", "busybox", "sh", "-c", "echo x > /f"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    // It took the one spare there was and gives it back.
    while entries_with(&spares, "").len() != 1 {
        assert!(
            Instant::now() < deadline,
            "no spare from the --rm container"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..3 {
        s.ok(&["run", "--rm", "busybox", "sh", "-c", "test ! -e /f"]);
    }
}

#[test]
fn a_run_root_with_content_is_not_mounted_over() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    std::fs::create_dir_all(&s.run).unwrap();
    std::fs::write(s.run.join("keep"), b"").unwrap();
    s.ok(&["run", "--rm", "busybox", "true"]);
    assert_eq!(mounted_at(&s.run), None);
    assert!(s.run.join("keep").exists());
}

#[test]
fn the_etc_mount_points_come_from_the_init_layer() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    // busybox's /etc has no hosts, hostname or resolv.conf: the store's init
    // layer gives the mount points, so nothing is made in the upper dir.
    let id = s
        .ok(&["run", "-d", "--hostname", "web", "busybox", "sleep", "100"])
        .trim()
        .to_string();
    let o = s.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "cat /etc/hostname; grep -c localhost /etc/hosts",
    ]);
    assert_eq!(o, "web\n2\n");
    let upper = s.root().join("containers").join(&id).join("upper");
    assert_eq!(
        std::fs::read_dir(&upper).unwrap().count(),
        0,
        "upper is empty"
    );
    assert_eq!(s.ok(&["diff", &id]), "");
    s.ok(&["rm", "-f", &id]);
    // An image whose /etc is a symlink keeps it: no init layer hides it.
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r");
    std::fs::create_dir(&r).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(busybox_tarball())
        .arg("-C")
        .arg(&r)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::rename(r.join("etc"), r.join("real-etc")).unwrap();
    std::os::unix::fs::symlink("real-etc", r.join("etc")).unwrap();
    let tar = tmp.path().join("sl.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&r)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    s.ok(&["import", tar.to_str().unwrap(), "etclink"]);
    let o = s.ok(&[
        "run",
        "--rm",
        "--hostname",
        "lnk",
        "etclink",
        "sh",
        "-c",
        "readlink /etc; cat /etc/hostname; ls /etc/passwd",
    ]);
    assert_eq!(o, "real-etc\nlnk\n/etc/passwd\n");
}

#[test]
fn run_in_the_foreground_streams_output_and_returns_the_exit_code() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    let o = s.run(&[
        "run",
        "--name",
        "fg",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "out\n");
    assert_eq!(text(&o.stderr), "err\n");
    // Kept (no --rm): ps -a shows it exited with 3; logs have both streams.
    let ps = s.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (3)"), "{ps}");
    assert!(ps.contains(" fg"), "{ps}");
    let o = s.run(&["logs", "fg"]);
    assert_eq!(text(&o.stdout), "out\n");
    assert_eq!(text(&o.stderr), "err\n");
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", "fg"])).unwrap();
    assert_eq!(v[0]["State"]["ExitCode"], 3);
    assert_eq!(v[0]["State"]["Status"], "exited");
    assert_eq!(v[0]["Name"], "/fg");
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.State.ExitCode}} {{.Config.Image}}",
            "fg"
        ]),
        "3 busybox\n"
    );
    // A command that is not there: 127; not executable: 126.
    let o = s.run(&["run", "--rm", "busybox", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("/nonexistent"),
        "{}",
        text(&o.stderr)
    );
    let o = s.run(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(o.status.code(), Some(126), "{}", text(&o.stderr));
    // Stdin with -i.
    let mut c = s.cmd(&["run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"shout\n").unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(text(&o.stdout), "SHOUT\n");
}

#[test]
fn the_container_sees_its_own_settings() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    let out = s.ok(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "-u",
        "user",
        "--hostname",
        "box",
        "busybox",
        "sh",
        "-c",
        "echo $GREETING $(pwd) $(id -u):$(id -g) $(hostname) $HOME; cat /etc/hostname",
    ]);
    assert_eq!(out, "hi /tmp 1000:1000 box /home/user\nbox\n");
    let out = s.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "echo",
        "busybox",
        "from",
        "entrypoint",
    ]);
    assert_eq!(out, "from entrypoint\n");
    let o = s.run(&["run", "--rm", "-u", "nosuch", "busybox", "true"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("nosuch"), "{}", text(&o.stderr));
}

#[test]
fn detached_containers_stop_start_and_go() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        "busybox",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo hello; while :; do sleep 0.1; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let ps = s.ok(&["ps"]);
    assert!(ps.contains(&id[..12]) && ps.contains("Up "), "{ps}");
    // Output reaches the log while it runs.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.ok(&["logs", "bg"]).contains("hello") {
        assert!(Instant::now() < deadline, "no output in the log");
        std::thread::sleep(Duration::from_millis(20));
    }
    // rm without -f refuses; stop uses SIGTERM, which the trap answers.
    let o = s.run(&["rm", "bg"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("cannot remove a running container"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(s.ok(&["stop", "bg"]), "bg\n");
    assert!(s.ok(&["logs", "bg"]).contains("bye"));
    assert!(s.ok(&["ps", "-a"]).contains("Exited (0)"));
    assert_eq!(s.ok(&["wait", "bg"]), "0\n");
    // Start again, kill, wait gives 137.
    s.ok(&["start", "bg"]);
    assert!(s.ok(&["ps"]).contains("bg"));
    s.ok(&["kill", "bg"]);
    assert_eq!(s.ok(&["wait", "bg"]), "137\n");
    s.ok(&["rm", "bg"]);
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    let o = s.run(&["rm", "bg"]);
    assert!(
        text(&o.stderr).contains("No such container: bg"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn names_are_unique_and_checked() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&["create", "--name", "one", "busybox", "true"]);
    let o = s.run(&["create", "--name", "one", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("is already in use"),
        "{}",
        text(&o.stderr)
    );
    let long = "x".repeat(10_000);
    for bad in ["../x", "a\u{7}b", "-x", long.as_str()] {
        let o = s.run(&["create", "--name", bad, "busybox", "true"]);
        assert_eq!(o.status.code(), Some(125), "{bad:?}");
        let err = text(&o.stderr);
        assert!(err.contains("Invalid container name"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let o = s.run(&["run", "--rm", "nosuchimage"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("nosuchimage"),
        "{}",
        text(&o.stderr)
    );
    let o = s.run(&[
        "run",
        "--rm",
        "-v",
        "/nonexistent/dir:/x",
        "busybox",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("does not exist"),
        "{}",
        text(&o.stderr)
    );
    // Only the one good container exists.
    assert_eq!(s.ok(&["ps", "-aq"]).lines().count(), 1);
    // `run` starts its monitor before it makes the container; when making
    // it fails, that monitor ends with the command instead of being left
    // behind (an orphan would be handed to this process, a subreaper).
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let o = s.run(&["run", "--name", "one", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let me = std::process::id().to_string();
    let orphans: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|st| {
            let after = st.rsplit_once(") ").map(|x| x.1).unwrap_or("");
            after.split(' ').nth(1) == Some(me.as_str())
        })
        .collect();
    assert!(orphans.is_empty(), "left behind: {orphans:?}");
}

#[test]
fn an_image_in_use_is_not_removed() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&["create", "--name", "user", "busybox", "true"]);
    let o = s.run(&["rmi", "busybox"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("is using its referenced image"),
        "{}",
        text(&o.stderr)
    );
    s.ok(&["rm", "user"]);
    s.ok(&["rmi", "busybox"]);
}

#[test]
fn a_bind_mount_shows_host_edits_live() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    let share = s.root().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("code.txt"), "v1\n").unwrap();
    let bind = format!("{}:/src", share.display());
    s.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "while :; do cat /src/code.txt; sleep 0.05; done",
    ]);
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(share.join("code.txt"), "v2\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.ok(&["logs", "live"]).contains("v2") {
        assert!(Instant::now() < deadline, "the edit never showed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Read-only binds are read-only.
    let ro = format!("{}:/src:ro", share.display());
    let o = s.run(&[
        "run",
        "--rm",
        "-v",
        &ro,
        "busybox",
        "sh",
        "-c",
        "echo x > /src/new",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!share.join("new").exists());
}

/// Poll `inspect -f format name` until it prints `want` (15 s at most).
fn wait_inspect(s: &Store, name: &str, format: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = s.ok(&["inspect", "-f", format, name]);
        if st.trim() == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: still {st}, not {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn restart_on_failure_counts_and_stops() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo try; exit 1",
    ]);
    wait_inspect(
        &s,
        "flaky",
        "{{.State.Status}} {{.RestartCount}}",
        "exited 2",
    );
    assert_eq!(s.ok(&["logs", "flaky"]).matches("try").count(), 3);
}

#[test]
fn update_restart_applies_to_the_running_container() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "later",
        "busybox",
        "sh",
        "-c",
        "echo try; sleep 1; exit 1",
    ]);
    s.ok(&["update", "--restart", "on-failure:1", "later"]);
    wait_inspect(
        &s,
        "later",
        "{{.State.Status}} {{.RestartCount}} {{.HostConfig.RestartPolicy.Name}}",
        "exited 1 on-failure",
    );
    assert_eq!(s.ok(&["logs", "later"]).matches("try").count(), 2);
}

#[test]
fn a_dead_monitor_does_not_leave_a_running_container() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&["run", "-d", "--name", "orphan", "busybox", "sleep", "1000"]);
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", "orphan"])).unwrap();
    let pid = v[0]["State"]["Pid"].as_i64().unwrap();
    assert!(pid > 0);
    let ppid = monitor_of(pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ppid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let ps = s.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited"), "{ps}");
    // Killed: gone, or a zombie waiting for the host's init to reap it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.is_empty() || status.contains("State:\tZ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container lives on: {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.ok(&["rm", "orphan"]);
}

#[test]
fn run_t_gives_a_terminal() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    let cmd = format!(
        "{} --root {} --run-root {} run --rm -t busybox sh -c 'tty; stty size'",
        env!("CARGO_BIN_EXE_berth"),
        s.root().display(),
        s.run.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(out.contains("/dev/pts/0"), "{out}");
}

#[test]
fn exec_pause_rename_top_attach_and_prune() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "-e",
        "FROM_RUN=1",
        "busybox",
        "sh",
        "-c",
        "while :; do echo tick; sleep 0.2; done",
    ]);
    // exec sees the container's environment and its own flags.
    assert_eq!(s.ok(&["exec", "svc", "sh", "-c", "echo $FROM_RUN"]), "1\n");
    assert_eq!(
        s.ok(&[
            "exec",
            "-e",
            "X=2",
            "-w",
            "/tmp",
            "svc",
            "sh",
            "-c",
            "echo $X $(pwd)"
        ]),
        "2 /tmp\n"
    );
    assert_eq!(s.ok(&["exec", "-u", "user", "svc", "id", "-u"]), "1000\n");
    let o = s.run(&["exec", "svc", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    let o = s.run(&["exec", "svc", "sh", "-c", "exit 5"]);
    assert_eq!(o.status.code(), Some(5));
    // top lists the container's processes only.
    let top = s.ok(&["top", "svc"]);
    assert!(top.lines().next().unwrap().contains("PID"), "{top}");
    assert!(top.contains("while :"), "{top}");
    assert!(!top.contains("berth-monitor"), "{top}");
    // pause / unpause.
    s.ok(&["pause", "svc"]);
    assert!(s.ok(&["ps"]).contains("(Paused)"));
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.Paused}}", "svc"]),
        "true\n"
    );
    let o = s.run(&["pause", "svc"]);
    assert_eq!(o.status.code(), Some(1));
    s.ok(&["unpause", "svc"]);
    assert!(s.ok(&["ps"]).contains("Up "));
    // rename, and a taken name refused.
    s.ok(&["create", "--name", "other", "busybox", "true"]);
    s.ok(&["rename", "svc", "renamed"]);
    assert!(s.ok(&["ps"]).contains("renamed"));
    let o = s.run(&["rename", "renamed", "other"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("already in use"),
        "{}",
        text(&o.stderr)
    );
    // attach streams output until the container stops.
    let att = s
        .cmd(&["attach", "renamed"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    s.ok(&["kill", "renamed"]);
    let out = att.wait_with_output().unwrap();
    assert!(text(&out.stdout).contains("tick"), "{}", text(&out.stdout));
    assert_eq!(out.status.code(), Some(137));
    // prune removes the stopped ones.
    let pruned = s.ok(&["container", "prune", "-f"]);
    assert!(pruned.contains("Deleted Containers:"), "{pruned}");
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

#[test]
fn limits_hold_and_are_reported() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    // Memory: the OOM killer's victim exits 137 and is reported.
    let o = s.run(&[
        "run",
        "--name",
        "oom",
        "-m",
        "16m",
        "--memory-swap",
        "16m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=128M",
        "count=1",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", text(&o.stderr));
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.State.OOMKilled}} {{.State.ExitCode}}",
            "oom"
        ]),
        "true 137\n"
    );
    let o = s.run(&["run", "--rm", "-m", "1m", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("Minimum memory limit"),
        "{}",
        text(&o.stderr)
    );
    // A fork bomb meets --pids-limit.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "bomb",
        "--pids-limit",
        "10",
        "busybox",
        "sh",
        "-c",
        "seq 40 | xargs -n1 -P40 sleep 5",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let top = s.ok(&["top", "bomb"]);
    let n = top.lines().count() - 1;
    assert!((2..=10).contains(&n), "{n} processes:\n{top}");
    s.ok(&["rm", "-f", "bomb"]);
    // --init is PID 1 and reaps.
    let out = s.ok(&["run", "--rm", "--init", "busybox", "cat", "/proc/1/cmdline"]);
    assert!(out.starts_with("/sbin/docker-init"), "{out:?}");
}

#[test]
fn logs_rotate_and_tail() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&[
        "run",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=2",
        "busybox",
        "sh",
        "-c",
        "for i in $(seq 200); do echo line $i; done",
    ]);
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", "chatty"])).unwrap();
    let log = PathBuf::from(v[0]["LogPath"].as_str().unwrap());
    assert!(std::fs::metadata(&log).unwrap().len() <= 2048 + 200);
    let mut rotated = log.clone().into_os_string();
    rotated.push(".1");
    assert!(Path::new(&rotated).exists(), "no rotated file");
    let mut third = log.into_os_string();
    third.push(".2");
    assert!(!Path::new(&third).exists(), "max-file=2 keeps two files");
    assert_eq!(
        s.ok(&["logs", "--tail", "2", "chatty"]),
        "line 199\nline 200\n"
    );
    let ts = s.ok(&["logs", "-t", "--tail", "1", "chatty"]);
    assert!(ts.ends_with(" line 200\n") && ts.starts_with("20"), "{ts}");
}

#[test]
fn volumes_are_shared_filled_and_kept() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    // A named volume made on first use, filled from the image's content.
    s.ok(&[
        "run",
        "--rm",
        "-v",
        "etcvol:/etc",
        "busybox",
        "sh",
        "-c",
        "echo added > /etc/mine",
    ]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "etcvol\n");
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["volume", "inspect", "etcvol"])).unwrap();
    let mp = PathBuf::from(v[0]["Mountpoint"].as_str().unwrap());
    assert!(
        mp.join("passwd").is_file(),
        "the image's /etc was copied in"
    );
    assert_eq!(std::fs::read_to_string(mp.join("mine")).unwrap(), "added\n");
    // Shared between containers: one writes, another reads.
    s.ok(&["volume", "create", "--label", "app=web", "shared"]);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "writer",
        "-v",
        "shared:/data",
        "busybox",
        "sh",
        "-c",
        "echo hello > /data/f; sleep 100",
    ]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = s.run(&[
            "run",
            "--rm",
            "-v",
            "shared:/data:ro",
            "busybox",
            "cat",
            "/data/f",
        ]);
        if text(&o.stdout) == "hello\n" {
            break;
        }
        assert!(Instant::now() < deadline, "never saw the write");
        std::thread::sleep(Duration::from_millis(50));
    }
    // --volumes-from gets the same mounts.
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "--volumes-from",
            "writer",
            "busybox",
            "cat",
            "/data/f"
        ]),
        "hello\n"
    );
    let o = s.run(&[
        "run",
        "--rm",
        "--volumes-from",
        "writer:ro",
        "busybox",
        "sh",
        "-c",
        "echo x > /data/g",
    ]);
    assert_ne!(o.status.code(), Some(0));
    // In use: not removable; filters.
    let o = s.run(&["volume", "rm", "shared"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("volume is in use"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(
        s.ok(&["volume", "ls", "-q", "--filter", "label=app=web"]),
        "shared\n"
    );
    assert_eq!(
        s.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]),
        "etcvol\n"
    );
    s.ok(&["rm", "-f", "writer"]);
    s.ok(&["volume", "rm", "shared"]);
    // Anonymous volumes: kept by rm, removed by rm -v and by --rm.
    s.ok(&[
        "create", "--name", "anon", "-v", "/scratch", "busybox", "true",
    ]);
    let before = s.ok(&["volume", "ls", "-q"]).lines().count();
    assert_eq!(before, 2);
    s.ok(&["rm", "-v", "anon"]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "etcvol\n");
    s.ok(&["run", "--rm", "-v", "/scratch", "busybox", "true"]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "etcvol\n");
    // A tmpfs-backed volume.
    s.ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=1m",
        "ram",
    ]);
    let out = s.ok(&[
        "run",
        "--rm",
        "-v",
        "ram:/ram",
        "busybox",
        "sh",
        "-c",
        "grep ' /ram ' /proc/mounts | cut -d' ' -f3",
    ]);
    assert_eq!(out, "tmpfs\n");
    s.ok(&["volume", "rm", "ram"]);
    // An image's VOLUME gets an anonymous volume of its own.
    let tarball = busybox_tarball();
    s.ok(&[
        "import",
        "-c",
        "VOLUME /vol",
        tarball.to_str().unwrap(),
        "withvol",
    ]);
    s.ok(&["create", "--name", "imgvol", "withvol", "true"]);
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", "imgvol"])).unwrap();
    assert_eq!(v[0]["Mounts"][0]["Destination"], "/vol");
    assert_eq!(v[0]["Mounts"][0]["Type"], "volume");
    s.ok(&["rm", "-v", "imgvol"]);
    // Bad names, and prune -a.
    let o = s.run(&["volume", "create", "../x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("invalid characters"),
        "{}",
        text(&o.stderr)
    );
    assert!(s.ok(&["volume", "prune", "-a", "-f"]).contains("etcvol"));
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
}

#[test]
fn many_commands_at_once_lose_nothing() {
    if !need_root() {
        return;
    }
    let s = std::sync::Arc::new(Store::new().with_busybox());
    // 50 detached runs at once: all start, no lock errors.
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let name = format!("par{i}");
                s.run(&["run", "-d", "--name", &name, "busybox", "sleep", "100"])
            })
        })
        .collect();
    for h in handles {
        let o = h.join().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(!text(&o.stderr).contains("locked"), "{}", text(&o.stderr));
    }
    assert_eq!(s.ok(&["ps", "-q"]).lines().count(), 50);
    // The same name created ten times at once: exactly one wins.
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || s.run(&["create", "--name", "same", "busybox", "true"]))
        })
        .collect();
    let results: Vec<Output> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|o| o.status.success()).count(), 1);
    for o in results.iter().filter(|o| !o.status.success()) {
        assert_eq!(o.status.code(), Some(125));
        assert!(
            text(&o.stderr).contains("already in use"),
            "{}",
            text(&o.stderr)
        );
    }
    // Concurrent removal and starts: every container ends up gone.
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let name = format!("par{i}");
                if i % 5 == 0 {
                    let _ = s.run(&["start", &name]);
                }
                s.run(&["rm", "-f", &name])
            })
        })
        .collect();
    for h in handles {
        let o = h.join().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    assert_eq!(
        s.ok(&["ps", "-aq"]).lines().count(),
        1,
        "only 'same' is left"
    );
}

#[test]
fn a_cli_killed_at_any_moment_leaves_a_consistent_store() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    for (i, delay_ms) in [0u64, 2, 5, 10, 20, 40, 80].into_iter().enumerate() {
        for args in [
            vec!["run", "-d", "busybox", "sleep", "100"],
            vec!["run", "--rm", "busybox", "sleep", "0.2"],
            vec!["run", "--name", "k", "busybox", "true"],
        ] {
            let mut child = s
                .cmd(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            let _ = child.kill();
            let _ = child.wait();
            // Whatever the moment, the next commands work.
            let ps = s.run(&["ps", "-a"]);
            assert!(ps.status.success(), "round {i}: {}", text(&ps.stderr));
            let _ = s.run(&["rm", "-f", "k"]);
        }
    }
    // Everything can be removed, and nothing is left mounted. (A --rm
    // container's monitor may be removing it at the same time.)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = s.ok(&["ps", "-aq", "--no-trunc"]);
        for id in left.split_whitespace() {
            let o = s.run(&["rm", "-f", id]);
            let err = text(&o.stderr);
            assert!(
                o.status.success() || err.contains("No such container"),
                "{err}"
            );
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounted = mounts.contains(s.root().to_str().unwrap());
        if left.is_empty() && !mounted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left: {left}; mounted: {mounted}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn listing_formats_stats_and_log_windows() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "lister",
        "-l",
        "tier=web",
        "busybox",
        "sh",
        "-c",
        "echo early; sleep 100",
    ]);
    assert_eq!(
        s.ok(&["ps", "--format", "{{.Names}} {{.State}} {{.Labels}}"]),
        "lister running tier=web\n"
    );
    let json = s.ok(&["ps", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["Names"], "lister");
    let table = s.ok(&["ps", "--format", "table {{.ID}}\t{{.Names}}"]);
    assert!(table.starts_with("CONTAINER ID"), "{table}");
    let sized = s.ok(&["ps", "-s"]);
    assert!(sized.lines().next().unwrap().ends_with("SIZE"), "{sized}");
    assert!(sized.contains("(virtual "), "{sized}");
    // Relative and volume filters.
    s.ok(&[
        "create", "--name", "later", "-v", "vf:/data", "busybox", "true",
    ]);
    assert_eq!(
        s.ok(&[
            "ps",
            "-a",
            "--filter",
            "since=lister",
            "--format",
            "{{.Names}}"
        ]),
        "later\n"
    );
    assert_eq!(
        s.ok(&[
            "ps",
            "-a",
            "--filter",
            "before=later",
            "--format",
            "{{.Names}}"
        ]),
        "lister\n"
    );
    assert_eq!(
        s.ok(&[
            "ps",
            "-a",
            "--filter",
            "volume=vf",
            "--format",
            "{{.Names}}"
        ]),
        "later\n"
    );
    assert_eq!(
        s.ok(&["ps", "-a", "--filter", "network=bridge", "-q"])
            .lines()
            .count(),
        2
    );
    assert_eq!(s.ok(&["ps", "-a", "--filter", "network=host", "-q"]), "");
    s.ok(&["rm", "later"]);
    // stats: one sample, the container's pids and a memory figure.
    let st = s.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}} {{.MemUsage}}",
        "lister",
    ]);
    assert!(st.starts_with("lister "), "{st}");
    let pids: u32 = st.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((1..=3).contains(&pids), "{st}");
    // Log windows: nothing before the start, everything since.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.ok(&["logs", "lister"]).contains("early") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.ok(&["logs", "--since", "1h", "lister"]), "early\n");
    assert_eq!(s.ok(&["logs", "--until", "1h", "lister"]), "");
    assert_eq!(
        s.ok(&["logs", "--since", "2000-01-01T00:00:00Z", "lister"]),
        "early\n"
    );
    let o = s.run(&["logs", "--since", "yesterday-ish", "lister"]);
    assert_ne!(o.status.code(), Some(0));
}

#[test]
fn update_changes_a_running_containers_limits() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&[
        "run", "-d", "--name", "upd", "-m", "64m", "busybox", "sleep", "100",
    ]);
    s.ok(&[
        "update",
        "--memory",
        "32m",
        "--memory-swap",
        "64m",
        "--pids-limit",
        "7",
        "upd",
    ]);
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}",
            "upd"
        ]),
        "33554432 7\n"
    );
    // The live cgroup has the new limits (v1 or v2).
    let id = s.ok(&["inspect", "-f", "{{.Id}}", "upd"]);
    let id = id.trim();
    let v1 = format!("/sys/fs/cgroup/memory/berth/{id}/memory.limit_in_bytes");
    let v2 = format!("/sys/fs/cgroup/berth/{id}/memory.max");
    let limit = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap();
    assert_eq!(limit.trim(), "33554432");
    let pids1 = format!("/sys/fs/cgroup/pids/berth/{id}/pids.max");
    let pids2 = format!("/sys/fs/cgroup/berth/{id}/pids.max");
    let pids = std::fs::read_to_string(&pids1)
        .or_else(|_| std::fs::read_to_string(&pids2))
        .unwrap();
    assert_eq!(pids.trim(), "7");
    let o = s.run(&["update", "--memory", "1m", "upd"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("Minimum memory limit"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn info_df_and_system_prune() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&["run", "--name", "done", "-v", "/anon", "busybox", "true"]);
    s.ok(&["run", "-d", "--name", "up", "busybox", "sleep", "100"]);
    assert_eq!(
        s.ok(&[
            "info",
            "-f",
            "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}} {{.Images}} {{.Driver}}"
        ]),
        "2 1 1 1 overlay2\n"
    );
    assert!(s.ok(&["info"]).contains(" Running: 1"));
    let df = s.ok(&["system", "df"]);
    assert!(df.starts_with("TYPE"), "{df}");
    assert!(
        df.lines()
            .any(|l| l.starts_with("Containers") && l.split_whitespace().nth(1) == Some("2")),
        "{df}"
    );
    let pruned = s.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(pruned.contains("Deleted Containers:"), "{pruned}");
    assert!(pruned.contains("Deleted Volumes:"), "{pruned}");
    assert_eq!(
        s.ok(&["ps", "-aq"]).lines().count(),
        1,
        "the running one stays"
    );
    assert_eq!(
        s.ok(&["images", "-q"]).lines().count(),
        1,
        "its image stays"
    );
}

#[test]
fn run_it_detaches_with_the_keys_and_exec_it_gets_a_terminal() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    let bin = env!("CARGO_BIN_EXE_berth");
    let flags = format!(
        "--root {} --run-root {}",
        s.root().display(),
        s.run.display()
    );
    // A terminal session: type a command, then Ctrl-P Ctrl-Q.
    let mut script = Command::new("script")
        .args([
            "-qec",
            &format!("{bin} {flags} run -it --name dk busybox sh"),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = script.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    std::io::Write::write_all(&mut input, b"echo typed-$((40+2))\r").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::io::Write::write_all(&mut input, b"\x10\x11").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = script.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "run -it did not detach");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(input);
    let out = script.wait_with_output().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        text(&out.stdout).contains("typed-42"),
        "{}",
        text(&out.stdout)
    );
    // Detached, not stopped.
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.Status}}", "dk"]),
        "running\n"
    );
    // exec -it: a terminal of its own.
    let o = Command::new("script")
        .args([
            "-qec",
            &format!("{bin} {flags} exec -it dk sh -c 'tty; echo $TERM'"),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(out.contains("/dev/pts/"), "{out}");
    s.ok(&["rm", "-f", "dk"]);
}

#[test]
fn security_and_resource_flags_reach_the_container() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    let status = |extra: &[&str], field: &str| -> String {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["busybox", "grep", field, "/proc/self/status"]);
        s.ok(&args)
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    // Docker's 14 capabilities by default; add/drop; privileged has all.
    assert_eq!(status(&[], "CapEff"), "00000000a80425fb");
    assert_eq!(
        status(&["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"], "CapEff"),
        "0000000000001000"
    );
    assert_eq!(
        status(&["--cap-drop", "chown"], "CapEff"),
        "00000000a80425fa"
    );
    // (This host withholds CAP_SYS_RESOURCE; the runtime leaves out what
    // the host does not grant.)
    let all = u64::from_str_radix(&status(&["--privileged"], "CapEff"), 16).unwrap();
    assert!(all & (1 << 21) != 0 && all.count_ones() >= 38, "{all:x}");
    let o = s.run(&["run", "--rm", "--cap-add", "CAP_NOPE", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("CAP_NOPE"), "{}", text(&o.stderr));
    // seccomp on by default (mode 2), off when unconfined; no_new_privs.
    assert_eq!(status(&[], "Seccomp:"), "2");
    assert_eq!(
        status(&["--security-opt", "seccomp=unconfined"], "Seccomp:"),
        "0"
    );
    assert_eq!(
        status(&["--security-opt", "no-new-privileges"], "NoNewPrivs"),
        "1"
    );
    // A custom profile in Docker's format: mkdir refused.
    let profile = s.root().join("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let sec = format!("seccomp={}", profile.display());
    let o = s.run(&[
        "run",
        "--rm",
        "--security-opt",
        &sec,
        "busybox",
        "mkdir",
        "/tmp/x",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("not permitted"),
        "{}",
        text(&o.stderr)
    );
    // Read-only root, with a tmpfs that stays writable.
    let o = s.run(&["run", "--rm", "--read-only", "busybox", "touch", "/x"]);
    assert_ne!(o.status.code(), Some(0));
    s.ok(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch:size=1m",
        "busybox",
        "touch",
        "/scratch/x",
    ]);
    // ulimits and devices.
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "--ulimit",
            "nofile=512:1024",
            "busybox",
            "sh",
            "-c",
            "ulimit -n"
        ]),
        "512\n"
    );
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "--device",
            "/dev/null:/dev/mynull",
            "busybox",
            "sh",
            "-c",
            "echo x > /dev/mynull && echo ok"
        ]),
        "ok\n"
    );
    let o = s.run(&["run", "--rm", "--device", "/etc/passwd", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    // --cpus and --cpuset-cpus reach the cgroup (as seen from inside).
    s.ok(&[
        "run",
        "-d",
        "--name",
        "cpu",
        "--cpus",
        "0.5",
        "--cpuset-cpus",
        "0",
        "busybox",
        "sleep",
        "100",
    ]);
    let id = s.ok(&["inspect", "-f", "{{.Id}}", "cpu"]);
    let quota = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/cpu/berth/{}/cpu.cfs_quota_us",
        id.trim()
    ))
    .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/berth/{}/cpu.max", id.trim())))
    .unwrap();
    assert!(quota.starts_with("50000"), "{quota}");
    // The CPUs a container may run on: the cpuset's, or else all of ours
    // (the runtime keeps a new container off its own CPU only until the
    // container has begun).
    let allowed = |args: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        a.extend(["busybox", "grep", "Cpus_allowed_list", "/proc/self/status"]);
        s.ok(&a).split_whitespace().last().unwrap_or("").to_string()
    };
    let ours = cpus_allowed("self");
    assert_eq!(allowed(&[]), ours);
    assert_eq!(allowed(&["--cpuset-cpus", "0"]), "0");
    // The monitor too: `run` starts it off its own CPU, and it takes every
    // CPU back once it runs.
    let pid = s.ok(&["inspect", "-f", "{{.State.Pid}}", "cpu"]);
    let monitor = monitor_of(pid.trim().parse().unwrap());
    assert_eq!(cpus_allowed(&monitor.to_string()), ours);
    // --stop-signal: stop sends it.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "sig",
        "--stop-signal",
        "USR1",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 0' USR1; while :; do sleep 0.1; done",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    s.ok(&["stop", "sig"]);
    assert!(s.ok(&["logs", "sig"]).contains("got-usr1"));
}

#[test]
fn stop_returns_with_the_network_released_and_restart_never_races_it() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    // PID 1 ignores SIGTERM: each stop ends with SIGKILL, as in the wild.
    let id = s.ok(&["run", "-d", "busybox", "sleep", "1000"]);
    let id = id.trim();
    let veth = format!("/sys/class/net/vb{}0", &id[..11]);
    let netns = s.run.join("netns").join(id);
    for round in 0..5 {
        let pid: i64 = s
            .ok(&["inspect", "-f", "{{.State.Pid}}", id])
            .trim()
            .parse()
            .unwrap();
        let monitor = monitor_of(pid);
        assert!(Path::new(&veth).exists(), "round {round}: no {veth}");
        s.ok(&["stop", "-t", "0", id]);
        // Everything the old monitor releases is released already.
        assert!(!alive(monitor), "round {round}: the monitor outlived stop");
        assert!(!Path::new(&veth).exists(), "round {round}: {veth} left");
        assert!(!netns.exists(), "round {round}: namespace left");
        // A restart right after an exit is not undone by the old monitor.
        s.ok(&["start", id]);
        s.ok(&["restart", "-t", "0", id]);
        assert_eq!(
            s.ok(&["inspect", "-f", "{{.State.Status}}", id]),
            "running\n"
        );
        assert!(
            netns.exists(),
            "round {round}: restarted without a namespace"
        );
    }
    // A later process given the old monitor's pid (here one that even
    // calls itself berth-monitor) is not waited for.
    s.ok(&["stop", "-t", "0", id]);
    let mut other = Command::new("bash")
        .args(["-c", "exec -a berth-monitor sleep 60"])
        .spawn()
        .unwrap();
    let state = s.run.join("containers").join(id).join("state.json");
    let mut st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    st["monitor_pid"] = other.id().into();
    std::fs::write(&state, serde_json::to_vec(&st).unwrap()).unwrap();
    let t0 = Instant::now();
    let started = s.run(&["start", id]);
    let took = t0.elapsed();
    let _ = other.kill();
    let _ = other.wait();
    common::succeeded(&["start"], started);
    assert!(took < Duration::from_secs(5), "start waited {took:?}");
}

#[test]
fn follow_restart_attach_on_start_and_more_flags() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    // --env-file, --mount of each kind, kill -s.
    let envf = s.root().join("env");
    std::fs::write(&envf, "# comment\nFROM_FILE=yes\n").unwrap();
    let host = s.root().join("m");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("f"), "bound\n").unwrap();
    let bind = format!("type=bind,source={},target=/b,readonly", host.display());
    let out = s.ok(&[
        "run",
        "--rm",
        "--env-file",
        envf.to_str().unwrap(),
        "--mount",
        &bind,
        "--mount",
        "type=tmpfs,target=/t",
        "--mount",
        "type=volume,source=mv,target=/v",
        "busybox",
        "sh",
        "-c",
        "echo $FROM_FILE; cat /b/f; grep -c ' /t tmpfs' /proc/mounts; touch /v/x && echo vol",
    ]);
    assert_eq!(out, "yes\nbound\n1\nvol\n");
    // logs -f follows until the container ends.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "fol",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo n$i; sleep 0.2; done",
    ]);
    assert_eq!(s.ok(&["logs", "-f", "fol"]), "n1\nn2\nn3\n");
    // start -a streams a stopped container's output and returns its code.
    s.ok(&[
        "create",
        "--name",
        "sa",
        "busybox",
        "sh",
        "-c",
        "echo again; exit 4",
    ]);
    let o = s.run(&["start", "-a", "sa"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(text(&o.stdout), "again\n");
    // kill -s delivers the named signal; restart starts it again.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "rst",
        "busybox",
        "sh",
        "-c",
        "trap 'echo hup' HUP; while :; do sleep 0.1; done",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    s.ok(&["kill", "-s", "HUP", "rst"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.ok(&["logs", "rst"]).contains("hup") {
        assert!(Instant::now() < deadline, "no HUP seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = s.ok(&["inspect", "-f", "{{.State.StartedAt}}", "rst"]);
    s.ok(&["restart", "-t", "1", "rst"]);
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.Status}}", "rst"]),
        "running\n"
    );
    assert_ne!(
        s.ok(&["inspect", "-f", "{{.State.StartedAt}}", "rst"]),
        before
    );
    // --restart always restarts an exit, but not a stop.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "al",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "sleep 0.2; exit 1",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: u32 = s
            .ok(&["inspect", "-f", "{{.RestartCount}}", "al"])
            .trim()
            .parse()
            .unwrap();
        if n >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never restarted");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.ok(&["stop", "-t", "1", "al"]);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.Status}}", "al"]),
        "exited\n"
    );
}
