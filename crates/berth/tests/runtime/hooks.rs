//! config.md "hooks" and runtime.md lifecycle: each hook runs at its step, in order, with
//! the container state on stdin; failing hooks fail create and leave nothing behind.

use crate::harness::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ALL_HOOKS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A hook that appends "<name> <env FOO> <state JSON>" as one line to the log. The log is
/// `<host>/hooklog/log`, which the container sees as /hooklog/log (for hooks that run in
/// the container's mount namespace after pivot_root: their `/bin/sh` is the container's).
fn log_hook(c: &Ctr, name: &str) -> Value {
    let dir = c.host_dir().join("hooklog");
    let script = format!(
        "L={dir}/log; [ -d {dir} ] || L=/hooklog/log; \
         {{ printf '%s %s ' \"$0\" \"$FOO\"; cat; echo; }} >> \"$L\"",
        dir = dir.display()
    );
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", script, name],
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", format!("FOO=foo-{name}")]
    })
}

/// (hook name, state) of each line of the log.
fn read_log(c: &Ctr) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(c.host_dir().join("hooklog/log")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.splitn(3, ' ');
            let name = it.next().unwrap().to_string();
            let env_foo = it.next().unwrap_or_default();
            assert_eq!(env_foo, format!("foo-{name}"), "hook env not passed: {l}");
            let state: Value = serde_json::from_str(it.next().unwrap_or_default())
                .unwrap_or_else(|e| panic!("hook {name} got no JSON state on stdin ({e}): {l}"));
            (name, state)
        })
        .collect()
}

fn names(log: &[(String, Value)]) -> Vec<&str> {
    log.iter().map(|(n, _)| n.as_str()).collect()
}

fn hooked(tag: &str, script: &str) -> Ctr {
    let mut c = Ctr::sh(tag, script, |_| {});
    std::fs::create_dir(c.host_dir().join("hooklog")).unwrap();
    let dir = c.host_dir().join("hooklog");
    let hooks: serde_json::Map<String, Value> = ALL_HOOKS
        .iter()
        .map(|h| (h.to_string(), json!([log_hook(&c, h)])))
        .collect();
    c.tweak(|cfg| {
        cfg["hooks"] = Value::Object(hooks);
        add_mount(
            cfg,
            json!({"destination": "/hooklog", "type": "bind", "source": dir, "options": ["rbind"]}),
        );
    });
    c
}

#[track_caller]
fn check_state(c: &Ctr, name: &str, state: &Value, statuses: &[&str], pid: i64) {
    assert_eq!(state["id"], c.id.as_str(), "{name}: {state}");
    assert!(state["ociVersion"].is_string(), "{name}: {state}");
    assert!(
        statuses.iter().any(|s| state["status"] == *s),
        "{name} saw status {}, want one of {statuses:?}: {state}",
        state["status"]
    );
    if name == "createContainer" || name == "startContainer" {
        // These run in the container's namespaces, where the process may be pid 1.
        assert!(
            state["pid"].as_i64() == Some(pid) || state["pid"].as_i64() == Some(1),
            "{name}: {state}"
        );
    } else {
        assert_eq!(state["pid"].as_i64(), Some(pid), "{name}: {state}");
    }
    let bundle = state["bundle"].as_str().unwrap_or_default();
    assert_eq!(
        std::fs::canonicalize(bundle).ok(),
        std::fs::canonicalize(c.bundle()).ok(),
        "{name}: {state}"
    );
}

#[test]
fn hooks_run_in_order_with_state() {
    need_root!();
    let c = hooked(
        "hooks",
        "echo started > /tmp/started; while [ ! -e /tmp/go ]; do sleep 0.02; done",
    );

    // runc before 1.2 runs poststart at create, not after start.
    let old_runc = runtime_older_than("runc", 1, 2);

    c.create().ok();
    let pid = c.pid() as i64;
    let log = read_log(&c);
    let mut want = vec!["prestart", "createRuntime", "createContainer"];
    if old_runc {
        want.push("poststart");
    }
    assert_eq!(names(&log), want, "after create");
    for (n, st) in &log[..3] {
        check_state(&c, n, st, &["creating", "created"], pid);
    }
    assert!(
        c.read_rootfs("tmp/started").is_none(),
        "user program ran before start"
    );

    c.start().ok();
    c.wait_rootfs_file("tmp/started");
    let log = read_log(&c);
    let want = if old_runc {
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "startContainer",
        ]
    } else {
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
        ]
    };
    assert_eq!(names(&log), want, "after start");
    let (sc, ps) = if old_runc { (4, 3) } else { (3, 4) };
    check_state(&c, "startContainer", &log[sc].1, &["created"], pid);
    if !old_runc {
        check_state(&c, "poststart", &log[ps].1, &["running"], pid);
    }

    std::fs::write(c.rootfs().join("tmp/go"), "").unwrap();
    c.wait_status("stopped");
    assert_eq!(read_log(&c).len(), 5, "a hook ran before delete");
    c.delete().ok();
    let log = read_log(&c);
    assert_eq!(&names(&log)[5..], ["poststop"], "after delete");
    let st = &log[5].1;
    assert_eq!(st["id"], c.id.as_str(), "{st}");
    assert_eq!(st["status"], "stopped", "poststop: {st}");
    c.assert_nothing_left();
}

#[test]
fn hooks_run_by_run_command() {
    need_root!();
    let c = hooked("hooks-run", "true");
    c.run().ok();
    let mut log = names(&read_log(&c))
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    if runtime_older_than("runc", 1, 2) {
        log.sort(); // runc before 1.2 runs poststart at create
        let mut want = ALL_HOOKS.map(String::from).to_vec();
        want.sort();
        assert_eq!(log, want);
    } else {
        assert_eq!(log, ALL_HOOKS);
    }
    c.assert_nothing_left();
}

fn failing_hook_leaves_nothing(tag: &str, hook: &str) {
    let c = Ctr::sh(tag, "echo ran > /tmp/ran", |cfg| {
        cfg["hooks"][hook] = json!([{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]);
    });
    let o = c.create().fails();
    assert!(!o.stderr.trim().is_empty(), "no error message: {o}");
    assert!(c.read_rootfs("tmp/ran").is_none(), "the user program ran");
    c.assert_nothing_left();
}

#[test]
fn hooks_failing_create_runtime_fails_create() {
    need_root!();
    failing_hook_leaves_nothing("hook-fail-cr", "createRuntime");
}

#[test]
fn hooks_failing_prestart_fails_create() {
    need_root!();
    failing_hook_leaves_nothing("hook-fail-pre", "prestart");
}

#[test]
fn hooks_failing_create_container_fails_create() {
    need_root!();
    failing_hook_leaves_nothing("hook-fail-cc", "createContainer");
}

#[test]
fn hooks_timeout_fails_create() {
    need_root!();
    let c = Ctr::sh("hook-timeout", "true", |cfg| {
        cfg["hooks"]["createRuntime"] =
            json!([{"path": "/bin/sh", "args": ["sh", "-c", "exec sleep 10"], "timeout": 1}]);
    });
    let t = Instant::now();
    let o = c.create().fails();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "create waited {:?} for a hook with timeout 1: {o}",
        t.elapsed()
    );
    c.assert_nothing_left();
}

#[test]
fn hooks_failing_poststop_does_not_fail_delete() {
    need_root!();
    let c = Ctr::sh("hook-poststop", "true", |_| {});
    let marker = c.host_dir().join("second-ran");
    let mut c = c;
    c.tweak(|cfg| {
        cfg["hooks"]["poststop"] = json!([
            {"path": "/bin/sh", "args": ["sh", "-c", "exit 1"]},
            {"path": "/bin/sh", "args": ["sh", "-c", format!("echo > {}", marker.display())]}
        ]);
    });
    c.create_start();
    c.wait_status("stopped");
    c.delete().ok();
    if !runtime_older_than("runc", 1, 2) {
        // runc before 1.2 stops at the first failing poststop hook.
        assert!(
            marker.exists(),
            "the hook after a failing poststop hook did not run"
        );
    }
    c.assert_nothing_left();
}

#[test]
fn hooks_missing_path_fails_create() {
    need_root!();
    let c = Ctr::sh("hook-missing", "true", |cfg| {
        cfg["hooks"]["createRuntime"] = json!([{"path": "/does/not/exist"}]);
    });
    let o = c.create().fails();
    if is_berth() {
        assert!(o.stderr.contains("/does/not/exist"), "{o}");
    }
    c.assert_nothing_left();
}
