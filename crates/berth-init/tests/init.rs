//! Runs the init program as an ordinary process (not PID 1): it forks the
//! command, forwards signals to it and, as a child subreaper, reaps orphans.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The program written once to an executable file. Written (and closed)
/// before any test spawns a process, so no fork can inherit a writable fd to
/// it (which would make exec fail with ETXTBSY); renamed into place so that
/// other test runs never see it half written.
fn init() -> Option<&'static Path> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| {
        let program = berth_init::program()?;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let tmp = dir.join(format!("docker-init.{}.tmp", std::process::id()));
        fs::write(&tmp, program).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("docker-init");
        fs::rename(&tmp, &path).unwrap();
        Some(path)
    })
    .as_deref()
}

macro_rules! init_or_skip {
    () => {
        match init() {
            Some(path) => path,
            None => {
                eprintln!("no init program for this architecture: skipped");
                return;
            }
        }
    };
}

fn run(init: &Path, args: &[&str]) -> Output {
    Command::new(init).args(args).output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("init itself died: {:?}", out.status))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits for `child`, killing it and failing after `secs` seconds.
fn wait_for(child: &mut Child, secs: u64) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("init did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the first line the command writes to stdout.
fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

/// The children of `parent` as (pid, state) from /proc/PID/stat.
fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut kids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit while we look: skip it.
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold anything but ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            kids.push((pid, fields[0].chars().next().unwrap_or('?')));
        }
    }
    kids
}

#[test]
fn exits_with_the_commands_status() {
    let init = init_or_skip!();
    let out = run(init, &["--", "/bin/sh", "-c", "exit 3"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    // "--" is optional.
    let out = run(init, &["/bin/sh", "-c", "exit 5"]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    // Arguments reach the command as they are.
    let out = run(init, &["--", "/bin/echo", "a", "b c", "--"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(out.stdout, b"a b c --\n");
}

#[test]
fn command_killed_by_a_signal_gives_128_plus_signal() {
    let init = init_or_skip!();
    let out = run(init, &["--", "/bin/sh", "-c", "kill -TERM $$"]);
    assert_eq!(code(&out), 143, "{}", stderr(&out));
}

#[test]
fn forwards_sigterm_to_the_command() {
    let init = init_or_skip!();
    let mut child = Command::new(init)
        .args(["--", "/bin/sh", "-c"])
        .arg(r#"trap "exit 7" TERM; echo ready; while :; do sleep 0.1; done"#)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut child), "ready\n");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_for(&mut child, 10);
    assert_eq!(status.code(), Some(7), "{status:?}");
}

#[test]
fn reaps_orphaned_zombies() {
    let init = init_or_skip!();
    // The inner shell leaves `sleep 2` behind as an orphan, which is
    // reparented to init (a subreaper); the command itself stays alive.
    let mut child = Command::new(init)
        .args(["--", "/bin/sh", "-c"])
        .arg("/bin/sh -c 'sleep 2 >/dev/null 2>&1 &'; echo ready; exec sleep 60")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut child), "ready\n");
    let me = child.id();
    let kids = children_of(me);
    assert_eq!(kids.len(), 2, "the command and the orphan: {kids:?}");

    // Once the orphan has exited, nothing but the command remains: no zombie.
    let deadline = Instant::now() + Duration::from_secs(10);
    let kids = loop {
        let kids = children_of(me);
        if kids.len() == 1 || Instant::now() > deadline {
            break kids;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(kids.len(), 1, "an orphan was not reaped: {kids:?}");
    assert_ne!(kids[0].1, 'Z', "{kids:?}");

    kill(Pid::from_raw(me as i32), Signal::SIGTERM).unwrap();
    let status = wait_for(&mut child, 10);
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert!(children_of(me).is_empty());
}

#[test]
fn command_runs_in_its_own_process_group_with_signals_unblocked() {
    let init = init_or_skip!();
    // cat is the command itself: /proc/self is the process init started.
    let out = run(init, &["--", "cat", "/proc/self/stat", "/proc/self/status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let stat = text.lines().next().unwrap();
    let (pid, rest) = stat.split_once(" (").unwrap();
    let (_, rest) = rest.rsplit_once(')').unwrap();
    // state ppid pgrp ...
    let pgrp = rest.split_whitespace().nth(2).unwrap();
    assert_eq!(pgrp, pid, "{stat}");
    // init blocks every signal; the command gets the mask init started with
    // (empty: std clears it for the processes it spawns).
    assert!(
        text.lines().any(|l| l == "SigBlk:\t0000000000000000"),
        "{text}"
    );
}

#[test]
fn exec_failure_is_one_line_and_127_or_126() {
    let init = init_or_skip!();
    let out = run(init, &["--", "/nonexistent"]);
    assert_eq!(code(&out), 127);
    assert_eq!(
        stderr(&out),
        "docker-init: exec /nonexistent failed: ENOENT\n"
    );

    // Found but not executable: EACCES.
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("not-executable");
    fs::write(&file, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(init, &["--", file.to_str().unwrap()]);
    assert_eq!(code(&out), 126);
    assert_eq!(
        stderr(&out),
        format!("docker-init: exec {} failed: EACCES\n", file.display())
    );
}

#[test]
fn no_command_is_a_usage_error() {
    let init = init_or_skip!();
    for args in [&[][..], &["--"][..], &["-s"][..]] {
        let out = run(init, args);
        assert_eq!(code(&out), 2, "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("usage: docker-init"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn looks_the_command_up_in_path() {
    let init = init_or_skip!();
    let out = run(init, &["--", "sh", "-c", "exit 0"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Without PATH in the environment, the default one is used.
    let out = Command::new(init)
        .args(["--", "sh", "-c", "exit 0"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // A PATH with an empty entry and a missing directory still finds it.
    let out = Command::new(init)
        .args(["--", "sh", "-c", "exit 4"])
        .env("PATH", ":/nonexistent-dir:/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(code(&out), 4, "{}", stderr(&out));

    let out = run(init, &["--", "no-such-command-berth-init"]);
    assert_eq!(code(&out), 127);
    assert_eq!(
        stderr(&out),
        "docker-init: exec no-such-command-berth-init failed: ENOENT\n"
    );
}
