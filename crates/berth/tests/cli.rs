//! The `berth` binary's own command line (the runtime's commands are tested
//! through `berth-runtime` in tests/runtime; here they are reached through
//! `berth runtime`).

use std::process::{Command, Output};

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .output()
        .expect("run berth")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_and_version() {
    let o = berth(&["--help"]);
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("runtime"), "{}", text(&o.stdout));
    let o = berth(&["version"]);
    assert!(o.status.success());
    assert!(
        text(&o.stdout).starts_with("berth version "),
        "{}",
        text(&o.stdout)
    );
    let o = berth(&["runtime", "--help"]);
    assert!(o.status.success());
    let out = text(&o.stdout);
    for cmd in [
        "create", "start", "state", "kill", "delete", "run", "exec", "list", "ps", "pause",
        "resume", "features", "spec",
    ] {
        assert!(out.contains(cmd), "berth runtime --help lacks {cmd}: {out}");
    }
}

#[test]
fn unknown_command_is_a_docker_style_error() {
    let o = berth(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(125));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.contains("'frobnicate' is not a berth command"), "{err}");
}

#[test]
fn runtime_through_berth() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let root = root.to_str().unwrap();
    // An empty state root lists nothing but the header.
    let o = berth(&["runtime", "--root", root, "list"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout).split_whitespace().collect::<Vec<_>>(),
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    );
    let o = berth(&["runtime", "--root", root, "list", "--format", "json"]);
    assert_eq!(text(&o.stdout).trim(), "[]");
    // features is JSON naming the hooks.
    let o = berth(&["runtime", "features"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hooks"].as_array().map(Vec::len), Some(6));
    // spec writes a config once, and refuses to overwrite it.
    let bundle = dir.path().to_str().unwrap();
    assert!(berth(&["runtime", "spec", "--bundle", bundle])
        .status
        .success());
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["process"]["args"][0], "sh");
    let o = berth(&["runtime", "spec", "--bundle", bundle]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("exists"), "{}", text(&o.stderr));
    // Errors are one line naming the object.
    let o = berth(&["runtime", "--root", root, "state", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr).trim(),
        "berth runtime: container \"nope\" does not exist"
    );
    let o = berth(&[
        "runtime",
        "--systemd-cgroup",
        "--root",
        root,
        "state",
        "nope",
    ]);
    assert!(
        text(&o.stderr).contains("--systemd-cgroup is not supported"),
        "{}",
        text(&o.stderr)
    );
}
