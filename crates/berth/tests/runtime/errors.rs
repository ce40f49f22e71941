//! Bad input: each must fail with a non-zero status and one line on stderr that names
//! the problem (for berth: the line contains the field or value), and leave nothing
//! behind: no state under --root, no cgroup directory, no mount.

use crate::harness::*;
use serde_json::json;

/// Checks the failure and its message. `needle` must appear in berth's message.
#[track_caller]
fn check_error(o: &Out, needle: &str) {
    assert!(!o.success(), "should have failed: {o}");
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no error message on stderr: {o}");
    assert_eq!(lines.len(), 1, "error is not one line: {o}");
    if is_berth() {
        assert!(
            lines[0].contains(needle),
            "error does not name {needle:?}: {o}"
        );
        assert!(!o.stderr.contains("panicked"), "panic: {o}");
    }
}

/// Nothing under the state root at all (ids that are not valid names included).
#[track_caller]
fn assert_state_root_empty(c: &Ctr) {
    let mut left = Vec::new();
    if let Ok(rd) = std::fs::read_dir(c.state_root()) {
        for e in rd.flatten() {
            left.push(e.path());
        }
    }
    // A runtime may keep a lock file in its root; a directory would be container state.
    left.retain(|p| p.is_dir());
    assert!(left.is_empty(), "state left under --root: {left:?}");
}

#[test]
fn error_invalid_json() {
    need_root!();
    let c = Ctr::new("err-json");
    c.write_raw_config("{ \"ociVersion\": \"1.0.2\", \"process\": ");
    let o = c.create();
    check_error(&o, "config.json");
    c.assert_nothing_left();
    assert_state_root_empty(&c);
}

#[test]
fn error_wrong_type_for_field() {
    need_root!();
    let c = Ctr::with("err-type", |c| {
        c["process"]["user"]["uid"] = json!("x");
    });
    let o = c.create();
    check_error(&o, "uid");
    c.assert_nothing_left();
    assert_state_root_empty(&c);
}

#[test]
fn error_missing_config() {
    need_root!();
    let c = Ctr::new("err-noconfig");
    std::fs::remove_file(c.bundle().join("config.json")).unwrap();
    let o = c.create();
    check_error(&o, "config.json");
    c.assert_nothing_left();
    assert_state_root_empty(&c);
}

#[test]
fn error_missing_bundle() {
    need_root!();
    let c = Ctr::new("err-nobundle");
    let missing = c.host_dir().join("no-such-bundle");
    let o = c.rt(&["create", "--bundle", missing.to_str().unwrap(), &c.id]);
    check_error(&o, "no-such-bundle");
    c.assert_nothing_left();
    assert_state_root_empty(&c);
}

#[test]
fn error_missing_rootfs() {
    need_root!();
    let c = Ctr::with("err-rootfs", |c| {
        c["root"]["path"] = json!("no-such-rootfs");
    });
    let o = c.create();
    check_error(&o, "no-such-rootfs");
    c.assert_nothing_left();
    assert_state_root_empty(&c);
}

#[test]
fn error_missing_executable() {
    need_root!();
    let c = Ctr::with("err-exe", |c| {
        c["process"]["args"] = json!(["/no/such/binary"]);
    });
    let o = c.run();
    check_error(&o, "/no/such/binary");
    c.assert_nothing_left();
}

#[test]
fn error_relative_cwd() {
    need_root!();
    let c = Ctr::with("err-cwd", |c| {
        c["process"]["cwd"] = json!("relative/dir");
    });
    let o = c.create();
    check_error(&o, "cwd");
    c.assert_nothing_left();
}

#[test]
fn error_unknown_namespace_type() {
    need_root!();
    let c = Ctr::with("err-ns", |c| {
        set_namespace(c, json!({"type": "bogusns"}));
    });
    let o = c.create();
    check_error(&o, "bogusns");
    c.assert_nothing_left();
}

fn bad_id(tag: &str, id: &str) {
    let c = Ctr::new(tag);
    let b = c.bundle();
    let o = c.rt(&["create", "--bundle", b.to_str().unwrap(), id]);
    check_error(&o, id);
    assert_state_root_empty(&c);
    assert!(
        c.cgroup_dirs().is_empty(),
        "cgroup left: {:?}",
        c.cgroup_dirs()
    );
    assert!(
        c.host_mounts().is_empty(),
        "mounts left: {:?}",
        c.host_mounts()
    );
    // Nothing outside the state root was touched either.
    assert!(c.bundle().join("config.json").is_file() && c.rootfs().join("bin/busybox").is_file());
    let st = c.rt(&["state", id]);
    assert!(!st.success(), "{st}");
}

#[test]
fn error_id_with_slash() {
    need_root!();
    bad_id("err-id-slash", "a/b");
}

#[test]
fn error_id_dotdot() {
    need_root!();
    bad_id("err-id-dotdot", "..");
}

#[test]
fn error_id_empty() {
    need_root!();
    let c = Ctr::new("err-id-empty");
    let b = c.bundle();
    let o = c.rt(&["create", "--bundle", b.to_str().unwrap(), ""]);
    assert!(!o.success(), "{o}");
    assert_state_root_empty(&c);
}

#[test]
fn error_duplicate_id() {
    need_root!();
    let c = Ctr::sh("err-dup", "while :; do sleep 1; done", |_| {});
    c.create().ok();
    let o = c.create();
    check_error(&o, &c.id);
    assert_eq!(c.status().as_deref(), Some("created"));
}

#[test]
fn error_unknown_signal() {
    need_root!();
    let c = Ctr::sh("err-signal", "while :; do sleep 1; done", |_| {});
    c.create().ok();
    let pid = c.pid();
    let o = c.kill("SIGFOO");
    check_error(&o, "SIGFOO");
    let o = c.kill("999");
    check_error(&o, "999");
    assert_eq!(c.status().as_deref(), Some("created"));
    assert_eq!(c.pid(), pid);
}

#[test]
fn error_operations_on_missing_container() {
    need_root!();
    let c = Ctr::new("err-missing");
    for args in [
        vec!["state", "nope-missing"],
        vec!["start", "nope-missing"],
        vec!["kill", "nope-missing", "KILL"],
        vec!["delete", "nope-missing"],
        vec!["pause", "nope-missing"],
        vec!["resume", "nope-missing"],
        vec!["ps", "nope-missing"],
        vec!["exec", "nope-missing", "true"],
    ] {
        let o = c.rt(&args);
        check_error(&o, "nope-missing");
    }
    assert_state_root_empty(&c);
}

#[test]
fn error_unknown_command_and_option() {
    need_root!();
    let c = Ctr::new("err-cli");
    let o = c.rt(&["frobnicate"]);
    assert!(!o.success(), "{o}");
    let o = c.rt(&["create", "--no-such-option", &c.id]);
    assert!(!o.success(), "{o}");
    assert_state_root_empty(&c);
}
