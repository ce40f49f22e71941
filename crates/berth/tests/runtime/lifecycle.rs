//! runtime.md: state, the lifecycle and the operations (create, start, state, kill,
//! delete), plus the runc command line around them (run, list, ps, pause/resume, pid
//! file, features, spec).

use crate::harness::*;
use serde_json::{json, Value};
use std::fs;
use std::path::Path;

/// A process that waits until the test creates /tmp/go in the rootfs, then exits 0.
const WAIT_FOR_GO: &str =
    "echo started > /tmp/started; while [ ! -e /tmp/go ]; do sleep 0.02; done; exit 0";

/// A process that runs until killed.
const FOREVER: &str = "echo ready > /tmp/ready; while :; do sleep 0.05; done";

#[test]
fn state_follows_create_start_exit_delete() {
    need_root!();
    let c = Ctr::sh("lifecycle", WAIT_FOR_GO, |_| {});

    // create: "created", with the pid of the container process, which exists but has not
    // run the user program yet.
    c.create().ok();
    let st = c.state().expect("state after create");
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], c.id.as_str(), "{st}");
    assert!(
        st["ociVersion"].is_string(),
        "state has no ociVersion: {st}"
    );
    let bundle = st["bundle"].as_str().expect("state.bundle");
    assert!(Path::new(bundle).is_absolute(), "bundle not absolute: {st}");
    assert_eq!(
        fs::canonicalize(bundle).unwrap(),
        fs::canonicalize(c.bundle()).unwrap(),
        "{st}"
    );
    let pid = st["pid"].as_i64().expect("pid in created state");
    assert!(
        pid > 0 && Path::new(&format!("/proc/{pid}")).exists(),
        "{st}"
    );
    assert!(
        c.read_rootfs("tmp/started").is_none(),
        "the user program ran before start"
    );
    let cg = c.cgroup_dirs();
    assert!(
        !cg.is_empty(),
        "no cgroup dir for {} after create",
        c.cgroups_path
    );

    // start: "running", the same pid, the user program runs.
    c.start().ok();
    c.wait_rootfs_file("tmp/started");
    let st = c.state().expect("state after start");
    assert!(
        st["status"] == "running" || st["status"] == "stopped",
        "after start: {st}"
    );
    assert_eq!(
        st["pid"].as_i64(),
        Some(pid),
        "pid changed across start: {st}"
    );
    assert_eq!(c.status().as_deref(), Some("running"));

    // the process exits: "stopped".
    fs::write(c.rootfs().join("tmp/go"), "").unwrap();
    c.wait_status("stopped");

    // delete: gone, with its state and its cgroups.
    c.delete().ok();
    c.assert_nothing_left();
    for d in &cg {
        assert!(!d.exists(), "cgroup dir {} left after delete", d.display());
    }
}

#[test]
fn start_of_running_container_fails() {
    need_root!();
    let c = Ctr::sh("start-twice", FOREVER, |_| {});
    c.create_start();
    c.wait_status("running");
    let pid = c.pid();
    c.start().fails();
    assert_eq!(c.status().as_deref(), Some("running"));
    assert_eq!(c.pid(), pid);
}

#[test]
fn start_of_stopped_container_fails() {
    need_root!();
    let c = Ctr::sh("start-stopped", "exit 0", |_| {});
    c.create_start();
    c.wait_status("stopped");
    c.start().fails();
    assert_eq!(c.status().as_deref(), Some("stopped"));
}

#[test]
fn delete_running_needs_force() {
    need_root!();
    let c = Ctr::sh("delete-force", FOREVER, |_| {});
    c.create_start();
    c.wait_rootfs_file("tmp/ready");
    let pid = c.pid();
    c.delete().fails();
    assert_eq!(
        c.status().as_deref(),
        Some("running"),
        "delete without --force changed it"
    );
    c.rt(&["delete", "--force", &c.id]).ok();
    c.assert_nothing_left();
    assert!(
        wait_until(WAIT, || !Path::new(&format!("/proc/{pid}")).exists()),
        "process {pid} survived delete --force"
    );
}

#[test]
fn delete_created_container_with_force() {
    need_root!();
    let c = Ctr::sh("delete-created", "echo ran > /tmp/ran", |_| {});
    c.create().ok();
    let pid = c.pid();
    c.rt(&["delete", "--force", &c.id]).ok();
    c.assert_nothing_left();
    assert!(wait_until(WAIT, || !Path::new(&format!("/proc/{pid}")).exists()));
    assert!(c.read_rootfs("tmp/ran").is_none(), "the user program ran");
}

#[test]
fn create_with_duplicate_id_fails_and_keeps_first() {
    need_root!();
    let c = Ctr::sh("dup-id", FOREVER, |_| {});
    c.create().ok();
    let pid = c.pid();
    let cg = c.cgroup_dirs();
    let again = c.create().fails();
    assert!(!again.stderr.trim().is_empty(), "no error message: {again}");
    let st = c.state().expect("first container still exists");
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["pid"].as_i64(), Some(pid as i64), "{st}");
    assert_eq!(
        c.cgroup_dirs(),
        cg,
        "cgroup dirs of the first container changed"
    );
    // …and still works.
    c.start().ok();
    c.wait_rootfs_file("tmp/ready");
    assert_eq!(c.status().as_deref(), Some("running"));
}

#[test]
fn run_returns_exit_code() {
    need_root!();
    let o = run_sh("exit-code", "echo out; echo err >&2; exit 3", |_| {});
    assert_eq!(o.code(), 3, "{o}");
    assert_eq!(o.out(), "out", "{o}");
    assert!(o.stderr.contains("err"), "{o}");
    let o = run_in_container("exit-zero", |_| {}, &["true"]);
    assert_eq!(o.code(), 0, "{o}");
}

#[test]
fn run_reports_killing_signal() {
    need_root!();
    // Like a shell: a process killed by signal N gives 128+N.
    let o = run_sh("exit-signal", "kill -KILL $$", |c| {
        // sh would be pid 1 of its namespace, which cannot get SIGKILL from inside.
        drop_namespace(c, "pid");
    });
    assert_eq!(o.code(), 137, "{o}");
}

#[test]
fn run_detach_leaves_container_running() {
    need_root!();
    let c = Ctr::sh("run-detach", FOREVER, |_| {});
    c.run_with(&["--detach"]).ok();
    c.wait_rootfs_file("tmp/ready");
    assert_eq!(c.status().as_deref(), Some("running"));
}

#[test]
fn pid_file_is_written() {
    need_root!();
    let c = Ctr::sh("pid-file", FOREVER, |_| {});
    let pf = c.host_dir().join("ctr.pid");
    c.create_with(&["--pid-file", pf.to_str().unwrap()]).ok();
    let text = read_trim(&pf);
    let pid: i64 = text
        .parse()
        .unwrap_or_else(|e| panic!("pid file {text:?}: {e}"));
    assert_eq!(Some(pid), c.state().unwrap()["pid"].as_i64());
}

#[test]
fn list_shows_container() {
    need_root!();
    let c = Ctr::sh("list", FOREVER, |_| {});
    c.create().ok();
    let q = c.rt(&["list", "-q"]).ok();
    assert_eq!(q.lines(), vec![c.id.clone()], "{q}");
    let j = c.rt(&["list", "--format", "json"]).ok();
    let v: Value = serde_json::from_str(&j.stdout).unwrap_or_else(|e| panic!("{e}: {j}"));
    let arr = v.as_array().unwrap_or_else(|| panic!("not an array: {j}"));
    assert_eq!(arr.len(), 1, "{j}");
    assert_eq!(arr[0]["id"], c.id.as_str(), "{j}");
    assert_eq!(arr[0]["status"], "created", "{j}");
    assert_eq!(arr[0]["pid"].as_i64(), Some(c.pid() as i64), "{j}");
    let t = c.rt(&["list"]).ok();
    assert!(
        t.stdout.contains(&c.id) && t.stdout.contains("created"),
        "{t}"
    );
    c.delete_force();
    let q = c.rt(&["list", "-q"]).ok();
    assert_eq!(q.out(), "", "{q}");
}

#[test]
fn ps_lists_container_processes() {
    need_root!();
    let c = Ctr::sh("ps", FOREVER, |_| {});
    c.create_start();
    c.wait_rootfs_file("tmp/ready");
    let pid = c.pid();
    let o = c.rt(&["ps", &c.id]).ok();
    assert!(
        o.stdout.split_whitespace().any(|w| w == pid.to_string()),
        "pid {pid} not listed: {o}"
    );
    let j = c.rt(&["ps", "--format", "json", &c.id]).ok();
    let v: Value = serde_json::from_str(&j.stdout).unwrap_or_else(|e| panic!("{e}: {j}"));
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_i64() == Some(pid as i64)),
        "{j}"
    );
}

/// A pid-1 shell that records the signals it gets (name per line in /tmp/sig).
const TRAPPER: &str = "trap 'echo USR1 >> /tmp/sig' USR1; trap 'echo USR2 >> /tmp/sig' USR2; \
    trap 'echo TERM >> /tmp/sig' TERM; trap 'echo HUP >> /tmp/sig' HUP; \
    echo ready > /tmp/ready; while :; do sleep 0.02; done";

fn wait_sig_lines(c: &Ctr, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let ok = wait_until(WAIT, || {
        lines = c
            .read_rootfs("tmp/sig")
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        lines.len() >= n
    });
    assert!(ok, "container got {lines:?}, expected {n} signals");
    lines
}

#[test]
fn kill_with_signal_names() {
    need_root!();
    let c = Ctr::sh("kill-names", TRAPPER, |_| {});
    c.create_start();
    c.wait_rootfs_file("tmp/ready");
    c.kill("USR1").ok();
    assert_eq!(wait_sig_lines(&c, 1), ["USR1"]);
    c.kill("SIGUSR2").ok();
    assert_eq!(wait_sig_lines(&c, 2), ["USR1", "USR2"]);
    c.kill("TERM").ok();
    assert_eq!(wait_sig_lines(&c, 3), ["USR1", "USR2", "TERM"]);
    assert_eq!(c.status().as_deref(), Some("running"));
    c.kill("KILL").ok();
    c.wait_status("stopped");
}

#[test]
fn kill_with_signal_numbers() {
    need_root!();
    let c = Ctr::sh("kill-numbers", TRAPPER, |_| {});
    c.create_start();
    c.wait_rootfs_file("tmp/ready");
    c.kill("1").ok(); // SIGHUP
    assert_eq!(wait_sig_lines(&c, 1), ["HUP"]);
    c.kill("10").ok(); // SIGUSR1 on x86 and arm
    assert_eq!(wait_sig_lines(&c, 2), ["HUP", "USR1"]);
    c.kill("9").ok();
    c.wait_status("stopped");
}

#[test]
fn kill_defaults_to_sigterm() {
    need_root!();
    let c = Ctr::sh("kill-default", TRAPPER, |_| {});
    c.create_start();
    c.wait_rootfs_file("tmp/ready");
    c.rt(&["kill", &c.id]).ok();
    assert_eq!(wait_sig_lines(&c, 1), ["TERM"]);
}

#[test]
fn kill_created_container_stops_it() {
    need_root!();
    let c = Ctr::sh("kill-created", "echo ran > /tmp/ran", |_| {});
    c.create().ok();
    c.kill("KILL").ok();
    c.wait_status("stopped");
    assert!(c.read_rootfs("tmp/ran").is_none(), "the user program ran");
    c.delete().ok();
    c.assert_nothing_left();
}

#[test]
fn kill_all_signals_every_process() {
    need_root!();
    // pid 1 and a child both trap TERM; without --all only pid 1 would get it.
    let script = "trap 'echo init >> /tmp/sig' TERM; \
        sh -c 'trap \"echo child >> /tmp/sig; exit 0\" TERM; echo ready > /tmp/ready; \
               while :; do sleep 0.02; done' & \
        while :; do sleep 0.02; done";
    let c = Ctr::sh("kill-all", script, |_| {});
    c.create_start();
    c.wait_rootfs_file("tmp/ready");
    c.rt(&["kill", "--all", &c.id, "TERM"]).ok();
    let mut lines = wait_sig_lines(&c, 2);
    lines.sort();
    assert_eq!(lines, ["child", "init"]);
    c.rt(&["kill", "--all", &c.id, "KILL"]).ok();
    c.wait_status("stopped");
}

#[test]
fn kill_stopped_container_fails() {
    need_root!();
    let c = Ctr::sh("kill-stopped", "exit 0", |_| {});
    c.create_start();
    c.wait_status("stopped");
    c.kill("KILL").fails();
}

#[test]
fn pause_and_resume() {
    need_root!();
    let c = Ctr::sh(
        "pause",
        "i=0; while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.01; done",
        |_| {},
    );
    c.create_start();
    let count = || -> u64 {
        c.read_rootfs("tmp/n")
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_until(WAIT, || count() > 2),
        "the process makes no progress"
    );
    c.rt(&["pause", &c.id]).ok();
    assert_eq!(c.status().as_deref(), Some("paused"));
    let a = count();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = count();
    assert_eq!(a, b, "a paused process made progress");
    assert_eq!(c.status().as_deref(), Some("paused"));
    c.rt(&["resume", &c.id]).ok();
    assert_eq!(c.status().as_deref(), Some("running"));
    assert!(
        wait_until(WAIT, || count() > b + 2),
        "no progress after resume"
    );
    // A paused container can be deleted with --force.
    c.rt(&["pause", &c.id]).ok();
    c.delete_force();
    c.assert_nothing_left();
}

#[test]
fn features_describes_the_runtime() {
    need_root!();
    let f = features().expect("features prints JSON");
    assert!(f["ociVersionMin"].is_string(), "{f}");
    assert!(f["ociVersionMax"].is_string(), "{f}");
    let hooks: Vec<&str> = f["hooks"]
        .as_array()
        .expect("features.hooks")
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    for h in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(hooks.contains(&h), "hook {h} missing from {f}");
    }
    let ns = f["linux"]["namespaces"]
        .as_array()
        .expect("features.linux.namespaces");
    for n in ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"] {
        assert!(ns.iter().any(|x| x == n), "namespace {n} missing from {f}");
    }
    let caps = f["linux"]["capabilities"]
        .as_array()
        .expect("features.linux.capabilities");
    assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"), "{f}");
    assert!(
        f["mountOptions"]
            .as_array()
            .map(|a| a.iter().any(|o| o == "rbind"))
            == Some(true)
    );
    assert_eq!(f["linux"]["seccomp"]["enabled"], true, "{f}");
}

#[test]
fn features_of_berth() {
    need_root!();
    berth_only!("berth's own features fields");
    let f = features().expect("features prints JSON");
    assert_eq!(
        f["ociVersionMax"].as_str().map(|v| v.starts_with("1.2")),
        Some(true),
        "{f}"
    );
    let ns = f["linux"]["namespaces"].as_array().expect("namespaces");
    assert!(
        ns.iter().any(|x| x == "time"),
        "time namespace missing: {f}"
    );
    assert_eq!(f["linux"]["cgroup"]["v1"], true, "{f}");
    assert_eq!(f["linux"]["cgroup"]["v2"], true, "{f}");
    for a in ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS"] {
        assert!(
            f["linux"]["seccomp"]["actions"]
                .as_array()
                .map(|v| v.iter().any(|x| x == a))
                == Some(true),
            "{a} missing: {f}"
        );
    }
}

#[test]
fn spec_writes_a_valid_config() {
    need_root!();
    let c = Ctr::new("spec");
    let dir = c.host_dir().join("spec");
    fs::create_dir(&dir).unwrap();
    c.rt(&["spec", "--bundle", dir.to_str().unwrap()]).ok();
    let v: Value = serde_json::from_str(&read_trim(dir.join("config.json"))).expect("JSON");
    assert!(
        v["ociVersion"].as_str().map(|s| s.starts_with("1.")) == Some(true),
        "{v}"
    );
    assert_eq!(v["root"]["path"], "rootfs", "{v}");
    assert!(v["process"]["args"].is_array(), "{v}");
    assert!(v["linux"]["namespaces"].is_array(), "{v}");
    // A bundle made from it (with our rootfs and a non-terminal process) runs.
    let mut cfg = v;
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["args"] = sh("echo from-spec");
    // In the test's own cgroup, which the harness removes with its parent.
    cfg["linux"]["cgroupsPath"] = json!(c.cgroups_path);
    fs::write(
        c.bundle().join("config.json"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    let o = c.run().ok();
    assert_eq!(o.out(), "from-spec", "{o}");
}

#[test]
fn state_of_unknown_container_fails() {
    need_root!();
    let c = Ctr::new("state-unknown");
    let o = c.rt(&["state", "no-such-container"]).fails();
    assert!(!o.stderr.trim().is_empty(), "{o}");
    c.rt(&["delete", "no-such-container"]).fails();
    c.rt(&["start", "no-such-container"]).fails();
    c.rt(&["kill", "no-such-container", "KILL"]).fails();
}

#[test]
fn state_is_creating_while_create_runs() {
    need_root!();
    berth_only!("state answers while create is still running");
    // A createRuntime hook asks the runtime for the state mid-create.
    let mut c = Ctr::sh("creating", "true", |_| {});
    let out = c.host_dir().join("seen");
    let script = format!(
        "{} --root {} state {} > {}",
        runtime_bin().display(),
        c.state_root().display(),
        c.id,
        out.display()
    );
    c.tweak(|cfg| {
        cfg["hooks"] =
            json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]});
    });
    c.create().ok();
    let seen: Value = serde_json::from_str(&fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(seen["status"], "creating", "{seen}");
    assert_eq!(c.status().as_deref(), Some("created"));
}
