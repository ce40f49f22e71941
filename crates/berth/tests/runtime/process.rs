//! config.md "process" and config-linux.md sysctl: what the container process gets,
//! checked from inside the container.

use crate::harness::*;
use serde_json::json;
use std::collections::BTreeSet;

#[test]
fn process_args_are_passed_verbatim() {
    need_root!();
    let o = run_in_container(
        "args",
        |_| {},
        &[
            "sh",
            "-c",
            "printf '[%s]' \"$0\" \"$@\"",
            "zero",
            "a b",
            "",
            "c'd",
            "$HOME",
        ],
    )
    .ok();
    assert_eq!(o.stdout, "[zero][a b][][c'd][$HOME]", "{o}");
}

#[test]
fn process_env_is_exactly_the_configured_one() {
    need_root!();
    let o = run_in_container(
        "env",
        |c| {
            c["process"]["env"] =
                json!([PATH_ENV, "HOME=/root", "FOO=bar baz", "EMPTY=", "EQ=a=b"]);
        },
        &["env"],
    )
    .ok();
    let got: BTreeSet<String> = o.lines().into_iter().collect();
    let want: BTreeSet<String> = [PATH_ENV, "HOME=/root", "FOO=bar baz", "EMPTY=", "EQ=a=b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want, "{o}");
}

#[test]
fn process_path_lookup_uses_container_path() {
    need_root!();
    // args[0] without a slash is looked up in the PATH of process.env, in the rootfs.
    let o = run_in_container(
        "path-lookup",
        |c| {
            c["process"]["env"] = json!(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
        },
        &["basename", "/a/b/c"],
    )
    .ok();
    assert_eq!(o.out(), "c", "{o}");
}

#[test]
fn process_cwd() {
    need_root!();
    let o = run_sh("cwd", "pwd", |c| {
        c["process"]["cwd"] = json!("/home/user");
    })
    .ok();
    assert_eq!(o.out(), "/home/user", "{o}");
}

#[test]
fn process_user_uid_gid_and_additional_gids() {
    need_root!();
    let o = run_sh(
        "user",
        "id; grep -E '^(Uid|Gid|Groups):' /proc/self/status; touch /tmp/f; stat -c '%u:%g' /tmp/f",
        |c| {
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [5, 100]});
        },
    )
    .ok();
    let lines = o.lines();
    assert_eq!(
        lines[0], "uid=1000(user) gid=1000(user) groups=5(tty),100",
        "{o}"
    );
    assert_eq!(
        status_field(&o.stdout, "Uid").map(|v| v.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["1000"; 4]),
        "{o}"
    );
    assert_eq!(
        status_field(&o.stdout, "Gid").map(|v| v.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["1000"; 4]),
        "{o}"
    );
    let groups: BTreeSet<&str> = status_field(&o.stdout, "Groups")
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(groups, BTreeSet::from(["5", "100"]), "{o}");
    assert_eq!(lines.last().map(String::as_str), Some("1000:1000"), "{o}");
}

#[test]
fn process_root_user_has_no_supplementary_groups() {
    need_root!();
    // The runtime's own groups must not leak into the container.
    let o = run_sh("no-groups", "grep '^Groups:' /proc/self/status", |_| {}).ok();
    assert_eq!(status_field(&o.stdout, "Groups"), Some(""), "{o}");
}

#[test]
fn process_umask() {
    need_root!();
    let o = run_sh(
        "umask",
        "umask; touch /tmp/f; mkdir /tmp/d; stat -c %a /tmp/f /tmp/d",
        |c| {
            c["process"]["user"]["umask"] = json!(0o027);
        },
    )
    .ok();
    assert_eq!(o.lines(), ["0027", "640", "750"], "{o}");
}

const CAP_KEYS: [&str; 5] = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"];

fn cap_sets(o: &Out) -> [u64; 5] {
    CAP_KEYS.map(|k| status_caps(&o.stdout, k))
}

#[track_caller]
fn assert_caps(o: &Out, want: [u64; 5]) {
    let got = cap_sets(o);
    for i in 0..5 {
        assert_eq!(
            got[i],
            want[i],
            "{}: got {:?}, want {:?}\n{o}",
            CAP_KEYS[i],
            cap_names(got[i]),
            cap_names(want[i])
        );
    }
}

#[test]
fn process_capabilities_all_five_sets_non_root() {
    need_root!();
    // For a non-root user (and a file without file capabilities), execve keeps the
    // bounding and inheritable sets, and permitted = effective = ambient.
    let bounding = [
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_RAW",
        "CAP_NET_BIND_SERVICE",
        "CAP_SETUID",
    ];
    let inheritable = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"];
    let permitted = [
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_RAW",
        "CAP_NET_BIND_SERVICE",
    ];
    let effective = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let ambient = ["CAP_CHOWN", "CAP_KILL"];
    let o = run_sh(
        "caps-user",
        "grep ^Cap /proc/self/status; touch /tmp/f; chown 0:0 /tmp/f && echo chown-ok",
        |c| {
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
            c["process"]["capabilities"] = json!({
                "bounding": bounding, "inheritable": inheritable, "permitted": permitted,
                "effective": effective, "ambient": ambient
            });
        },
    )
    .ok();
    let amb = cap_mask(&ambient);
    assert_caps(
        &o,
        [cap_mask(&inheritable), amb, amb, cap_mask(&bounding), amb],
    );
    assert!(
        o.stdout.contains("chown-ok"),
        "CAP_CHOWN (ambient) not usable: {o}"
    );
}

#[test]
fn process_capabilities_root() {
    need_root!();
    // For uid 0, execve makes permitted = effective = bounding (legacy root semantics);
    // inheritable and ambient stay as configured (empty).
    let bounding = [
        "CAP_DAC_OVERRIDE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_AUDIT_WRITE",
    ];
    let o = run_sh(
        "caps-root",
        "grep ^Cap /proc/self/status; touch /tmp/f; chown 1000 /tmp/f && echo chown-ok",
        |c| {
            c["process"]["capabilities"] = json!({
                "bounding": bounding, "permitted": bounding, "effective": bounding
            });
        },
    );
    let b = cap_mask(&bounding);
    assert_caps(&o, [0, b, b, b, 0]);
    assert!(
        !o.stdout.contains("chown-ok"),
        "chown worked without CAP_CHOWN: {o}"
    );
    assert!(o.stderr.contains("Operation not permitted"), "{o}");
}

#[test]
fn process_capabilities_default_set() {
    need_root!();
    let o = run_sh("caps-default", "grep ^Cap /proc/self/status", |_| {}).ok();
    let d = cap_mask(DEFAULT_CAPS);
    assert_caps(&o, [0, d, d, d, 0]);
}

#[test]
fn process_no_capabilities_at_all() {
    need_root!();
    let o = run_sh("caps-none", "grep ^Cap /proc/self/status", |c| {
        c["process"]["capabilities"] = json!({});
    })
    .ok();
    assert_caps(&o, [0, 0, 0, 0, 0]);
}

#[test]
fn process_no_new_privileges() {
    need_root!();
    let o = run_sh("nnp-on", "grep ^NoNewPrivs /proc/self/status", |c| {
        c["process"]["noNewPrivileges"] = json!(true);
    })
    .ok();
    assert_eq!(status_field(&o.stdout, "NoNewPrivs"), Some("1"), "{o}");
    let o = run_sh("nnp-off", "grep ^NoNewPrivs /proc/self/status", |c| {
        c["process"]["noNewPrivileges"] = json!(false);
    })
    .ok();
    assert_eq!(status_field(&o.stdout, "NoNewPrivs"), Some("0"), "{o}");
}

/// (soft, hard) of a "Max …" line of /proc/self/limits.
fn limits_line(limits: &str, name: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {limits}"));
    let rest: Vec<&str> = line[name.len()..].split_whitespace().collect();
    (rest[0].to_string(), rest[1].to_string())
}

#[test]
fn process_rlimits() {
    need_root!();
    use nix::sys::resource::{getrlimit, Resource};
    // Stay within the host's hard limits: this sandbox may lack CAP_SYS_RESOURCE.
    let nproc_hard = getrlimit(Resource::RLIMIT_NPROC).unwrap().1.min(4000);
    let stack_hard = getrlimit(Resource::RLIMIT_STACK).unwrap().1.min(8388608);
    let o = run_sh(
        "rlimits",
        "ulimit -n; ulimit -Hn; cat /proc/self/limits",
        |c| {
            c["process"]["rlimits"] = json!([
                {"type": "RLIMIT_NOFILE", "soft": 1000, "hard": 2000},
                {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                {"type": "RLIMIT_NPROC", "soft": nproc_hard / 2, "hard": nproc_hard},
                {"type": "RLIMIT_STACK", "soft": stack_hard / 2, "hard": stack_hard}
            ]);
        },
    )
    .ok();
    let lines = o.lines();
    assert_eq!(&lines[..2], ["1000", "2000"], "{o}");
    assert_eq!(
        limits_line(&o.stdout, "Max open files"),
        ("1000".into(), "2000".into())
    );
    assert_eq!(
        limits_line(&o.stdout, "Max core file size"),
        ("0".into(), "0".into())
    );
    assert_eq!(
        limits_line(&o.stdout, "Max processes"),
        ((nproc_hard / 2).to_string(), nproc_hard.to_string())
    );
    assert_eq!(
        limits_line(&o.stdout, "Max stack size"),
        ((stack_hard / 2).to_string(), stack_hard.to_string())
    );
}

#[test]
fn process_rlimit_nofile_above_host_hard_limit_is_clamped() {
    need_root!();
    berth_only!("berth clamps RLIMIT_NOFILE to the host's hard limit; runc fails");
    let (_, host_hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    // Without CAP_SYS_RESOURCE (as in this suite's sandbox) nobody can raise the hard
    // limit past the host's; with it, the runtime can grant the request.
    let want = if host_has_cap("CAP_SYS_RESOURCE") {
        1048576
    } else {
        host_hard.min(1048576)
    };
    let o = run_sh("rlimit-clamp", "cat /proc/self/limits", |c| {
        c["process"]["rlimits"] =
            json!([{"type": "RLIMIT_NOFILE", "soft": 1048576, "hard": 1048576}]);
    })
    .ok();
    assert_eq!(
        limits_line(&o.stdout, "Max open files"),
        (want.to_string(), want.to_string()),
        "{o}"
    );
}

#[test]
fn process_unknown_rlimit_fails() {
    need_root!();
    let c = Ctr::sh("rlimit-bad", "true", |c| {
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}]);
    });
    let o = c.run().fails();
    if is_berth() {
        assert!(o.stderr.contains("RLIMIT_FOO"), "{o}");
    }
    c.assert_nothing_left();
}

#[test]
fn process_oom_score_adj() {
    need_root!();
    let o = run_sh("oom", "cat /proc/self/oom_score_adj", |c| {
        c["process"]["oomScoreAdj"] = json!(500);
    })
    .ok();
    assert_eq!(o.out(), "500", "{o}");
    if !host_has_cap("CAP_SYS_RESOURCE") {
        eprintln!("note: no CAP_SYS_RESOURCE here; a negative oomScoreAdj is not checked");
        return;
    }
    let o = run_sh("oom-neg", "cat /proc/self/oom_score_adj", |c| {
        c["process"]["oomScoreAdj"] = json!(-400);
    })
    .ok();
    assert_eq!(o.out(), "-400", "{o}");
}

#[test]
fn process_hostname() {
    need_root!();
    let host_before = nix::unistd::gethostname().unwrap();
    let o = run_sh("hostname", "hostname; cat /proc/sys/kernel/hostname", |c| {
        c["hostname"] = json!("berth-box");
    })
    .ok();
    assert_eq!(o.lines(), ["berth-box", "berth-box"], "{o}");
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        host_before,
        "host's hostname changed"
    );
}

#[test]
fn process_domainname() {
    need_root!();
    skip_if_older!("runc", 1, 2, "domainname");
    let host_before = read_trim("/proc/sys/kernel/domainname");
    let o = run_sh(
        "domainname",
        "hostname; cat /proc/sys/kernel/domainname",
        |c| {
            c["hostname"] = json!("berth-box");
            c["domainname"] = json!("berth.example");
        },
    )
    .ok();
    assert_eq!(o.lines(), ["berth-box", "berth.example"], "{o}");
    assert_eq!(
        read_trim("/proc/sys/kernel/domainname"),
        host_before,
        "host's domainname changed"
    );
}

#[test]
fn sysctl_namespaced_values_are_set() {
    need_root!();
    let host_fwd = read_trim("/proc/sys/net/ipv4/ip_forward");
    let o = run_sh(
        "sysctl",
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ping_group_range",
        |c| {
            c["linux"]["sysctl"] = json!({
                "net.ipv4.ip_forward": "1",
                "kernel.shmmax": "12345678",
                "net.ipv4.ping_group_range": "0 2147483647"
            });
        },
    )
    .ok();
    let lines: Vec<String> = o
        .lines()
        .into_iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines, ["1", "12345678", "0 2147483647"], "{o}");
    assert_eq!(
        read_trim("/proc/sys/net/ipv4/ip_forward"),
        host_fwd,
        "host sysctl changed"
    );
}

#[test]
fn sysctl_not_namespaced_is_refused() {
    need_root!();
    let host = read_trim("/proc/sys/vm/swappiness");
    let other = if host == "13" { "14" } else { "13" };
    let c = Ctr::sh("sysctl-vm", "true", |c| {
        c["linux"]["sysctl"] = json!({ "vm.swappiness": other });
    });
    let o = c.create().fails();
    if is_berth() {
        assert!(o.stderr.contains("vm.swappiness"), "{o}");
    }
    assert_eq!(
        read_trim("/proc/sys/vm/swappiness"),
        host,
        "host's vm.swappiness changed"
    );
    c.assert_nothing_left();
}

#[test]
fn sysctl_net_without_net_namespace_is_refused() {
    need_root!();
    let host = read_trim("/proc/sys/net/ipv4/ip_forward");
    let c = Ctr::sh("sysctl-hostnet", "true", |c| {
        drop_namespace(c, "network");
        drop_mount(c, "/sys");
        c["linux"]["sysctl"] =
            json!({ "net.ipv4.ip_forward": if host == "1" { "0" } else { "1" } });
    });
    let o = c.create().fails();
    if is_berth() {
        assert!(o.stderr.contains("net.ipv4.ip_forward"), "{o}");
    }
    assert_eq!(
        read_trim("/proc/sys/net/ipv4/ip_forward"),
        host,
        "host sysctl changed"
    );
    c.assert_nothing_left();
}

/// Receives one fd over a unix socket (SCM_RIGHTS), within `WAIT`. The fd is CLOEXEC.
fn recv_fd(listener: std::os::unix::net::UnixListener) -> Result<std::os::fd::RawFd, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if start.elapsed() > WAIT {
                    return Err("nobody connected to the console socket".into());
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("recvmsg: {e}"))?;
    for cmsg in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                for extra in &fds[1..] {
                    let _ = nix::unistd::close(*extra);
                }
                return Ok(*fd);
            }
        }
    }
    Err("no fd in the console socket message".into())
}

#[test]
fn process_terminal_via_console_socket() {
    need_root!();
    use nix::fcntl::OFlag;
    use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions};
    use nix::sys::stat::Mode;
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use std::ffi::CString;

    let c = Ctr::sh(
        "terminal",
        "read line; echo \"got:$line\"; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-ttys; tty; \
         stty size",
        |c| {
            c["process"]["terminal"] = json!(true);
            c["process"]["consoleSize"] = json!({"height": 31, "width": 97});
        },
    );
    let sock = c.host_dir().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let receiver = std::thread::spawn(move || recv_fd(listener));
    c.create_with(&["--console-socket", sock.to_str().unwrap()])
        .ok();
    let master = receiver.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    let link = std::fs::read_link(format!("/proc/self/fd/{master}")).unwrap();
    assert!(
        link.to_string_lossy().contains("ptmx"),
        "received fd is {link:?}, not a pty master"
    );

    // A helper process (busybox sh) gets the master as an fd, writes a line to it and
    // copies what comes back to a file until the container hangs up. (The package
    // forbids `unsafe`, so the test does not read the raw fd itself.)
    let target = if master == 3 { 4 } else { 3 };
    let out_p = c.host_dir().join("tty.out");
    let mut fa = PosixSpawnFileActions::init().unwrap();
    fa.add_open(0, "/dev/null", OFlag::O_RDONLY, Mode::empty())
        .unwrap();
    fa.add_open(
        1,
        out_p.as_path(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC,
        Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    fa.add_open(2, "/dev/null", OFlag::O_WRONLY, Mode::empty())
        .unwrap();
    fa.add_dup2(master, target).unwrap();
    let script = format!("printf 'hello-tty\\n' >&{target}; exec timeout 20 cat <&{target}");
    let args = [
        CString::new("busybox").unwrap(),
        CString::new("sh").unwrap(),
        CString::new("-c").unwrap(),
        CString::new(script).unwrap(),
    ];
    let env: [CString; 0] = [];
    let helper = posix_spawn(
        "/bin/busybox",
        &fa,
        &PosixSpawnAttr::init().unwrap(),
        &args,
        &env,
    )
    .expect("spawn tty helper");
    nix::unistd::close(master).unwrap();

    c.start().ok();
    let done = wait_until(WAIT, || {
        !matches!(
            waitpid(helper, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        )
    });
    if !done {
        let _ = nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(helper, None);
    }
    let out = std::fs::read_to_string(&out_p)
        .unwrap_or_default()
        .replace('\r', "");
    assert!(done, "the pty never hung up; output so far: {out:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"hello-tty"),
        "no echo of the input: {out:?}"
    );
    assert!(
        lines.contains(&"got:hello-tty"),
        "the process did not read the input: {out:?}"
    );
    assert!(
        lines.contains(&"all-ttys"),
        "stdio is not the terminal: {out:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("/dev/pts/")),
        "tty is not a /dev/pts device: {out:?}"
    );
    assert!(lines.contains(&"31 97"), "consoleSize not applied: {out:?}");
    c.wait_status("stopped");
}

#[test]
fn process_personality_linux32() {
    need_root!();
    berth_only!("linux.personality (Debian's runc 1.1 predates it)");
    let o = run_sh("personality", "uname -m", |c| {
        c["linux"]["personality"] = json!({"domain": "LINUX32"});
    })
    .ok();
    assert!(
        ["i686", "i386", "armv8l", "armv7l"].contains(&o.out()),
        "{o}"
    );
}

#[test]
fn process_scheduler_io_priority_and_cpu_affinity() {
    need_root!();
    berth_only!(
        "scheduler, ioPriority and execCPUAffinity (runtime-spec 1.2; runc 1.1 predates them)"
    );
    // /proc/self/stat field 41 is the scheduling policy (3 = SCHED_BATCH).
    let o = run_sh(
        "sched",
        "cut -d' ' -f41 /proc/self/stat; ionice -p $$; grep Cpus_allowed_list /proc/self/status",
        |c| {
            c["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
            c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
            c["process"]["execCPUAffinity"] = json!({"final": "0"});
        },
    )
    .ok();
    let lines = o.lines();
    assert_eq!(lines[0], "3", "{o}");
    assert!(lines[1].starts_with("idle"), "{o}");
    assert_eq!(lines[2].split_whitespace().last(), Some("0"), "{o}");
}

#[test]
fn process_session_keyring_is_the_containers_own() {
    need_root!();
    berth_only!("a named session keyring per container");
    let c = Ctr::sh("keyring", "true", |_| {});
    c.create().ok();
    let keys = std::fs::read_to_string("/proc/keys").unwrap_or_default();
    assert!(keys.contains(&format!("_ses.{}", c.id)), "{keys}");
    c.delete_force().ok();
    let c2 = Ctr::sh("keyring-none", "true", |_| {});
    c2.create_with(&["--no-new-keyring"]).ok();
    let keys = std::fs::read_to_string("/proc/keys").unwrap_or_default();
    assert!(!keys.contains(&format!("_ses.{}", c2.id)), "{keys}");
}

#[test]
fn process_terminal_held_by_run_without_console_socket() {
    need_root!();
    berth_only!("run -t relays its own terminal");
    // `script` gives the runtime a terminal of its own; the container gets a
    // pty behind it and its input and output pass through.
    let c = Ctr::sh(
        "run-tty",
        "tty; read line; echo \"got $line\"; exit 4",
        |c| {
            c["process"]["terminal"] = json!(true);
        },
    );
    let cmdline = format!(
        "{} --root {} run --bundle {} {}",
        runtime_bin().display(),
        c.state_root().display(),
        c.bundle().display(),
        c.id
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &cmdline, "/dev/null"]);
    let o = c.run_cmd(cmd, Some(b"hello\n"));
    assert_eq!(o.code(), 4, "{o}");
    assert!(o.stdout.contains("/dev/pts/0"), "{o}");
    assert!(o.stdout.contains("got hello"), "{o}");
}
