//! `exec`: a second process in a running container joins its namespaces and cgroups and
//! gets the process settings asked for.

use crate::harness::*;
use serde_json::json;
use std::fs;

fn running(tag: &str, tweak: impl FnOnce(&mut serde_json::Value)) -> Ctr {
    let c = Ctr::sh(
        tag,
        "echo ready > /tmp/ready; while :; do sleep 0.05; done",
        tweak,
    );
    c.create_start();
    c.wait_rootfs_file("tmp/ready");
    c
}

#[test]
fn exec_joins_the_container() {
    need_root!();
    let c = running("exec-join", |c| {
        c["hostname"] = json!("exec-host");
    });
    let pid = c.pid();
    let kinds = ["pid", "net", "ipc", "uts", "mnt", "cgroup"];
    let script = kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k};"))
        .collect::<String>()
        + " hostname; cat /proc/self/cgroup; test -x /bin/busybox && echo in-rootfs";
    let o = c.exec(&["sh", "-c", &script]).ok();
    let l = o.lines();
    for (i, k) in kinds.iter().enumerate() {
        let want = fs::read_link(format!("/proc/{pid}/ns/{k}")).unwrap();
        assert_eq!(l[i], want.to_string_lossy(), "{k} namespace: {o}");
    }
    assert_eq!(l[kinds.len()], "exec-host", "{o}");
    let init_cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let inner_init_cg = c.exec(&["cat", "/proc/1/cgroup"]).ok();
    assert_eq!(
        l[kinds.len() + 1..l.len() - 1].join("\n"),
        inner_init_cg.out(),
        "exec'd process is in other cgroups than pid 1 ({init_cg}): {o}"
    );
    assert_eq!(l.last().unwrap(), "in-rootfs", "{o}");
}

#[test]
fn exec_returns_exit_code_and_output() {
    need_root!();
    let c = running("exec-code", |_| {});
    let o = c.exec(&["sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!(o.code(), 5, "{o}");
    assert_eq!(o.out(), "out", "{o}");
    assert!(o.stderr.contains("err"), "{o}");
}

#[test]
fn exec_with_env_cwd_user() {
    need_root!();
    let c = running("exec-opts", |_| {});
    let o = c
        .exec_with(
            &["--env", "FOO=bar", "--cwd", "/tmp", "--user", "1000:1000"],
            &["sh", "-c", "echo $FOO; pwd; id -u; id -g; echo $PATH"],
        )
        .ok();
    let l = o.lines();
    assert_eq!(&l[..4], ["bar", "/tmp", "1000", "1000"], "{o}");
    // The container's process env is the base.
    assert_eq!(format!("PATH={}", l[4]), PATH_ENV, "{o}");
}

#[test]
fn exec_with_process_json() {
    need_root!();
    let c = running("exec-process", |_| {});
    let p = c.host_dir().join("process.json");
    fs::write(
        &p,
        json!({
            "terminal": false,
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
            "args": ["sh", "-c", "echo $BAR; pwd; id; grep ^CapEff /proc/self/status"],
            "env": [PATH_ENV, "BAR=baz"],
            "cwd": "/home/user",
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                             "permitted": ["CAP_KILL"], "inheritable": ["CAP_KILL"],
                             "ambient": ["CAP_KILL"]},
            "noNewPrivileges": true
        })
        .to_string(),
    )
    .unwrap();
    let o = c.exec_with(&["--process", p.to_str().unwrap()], &[]).ok();
    let l = o.lines();
    assert_eq!(l[0], "baz", "{o}");
    assert_eq!(l[1], "/home/user", "{o}");
    assert_eq!(l[2], "uid=1000(user) gid=1000(user) groups=5(tty)", "{o}");
    assert_eq!(
        status_caps(&o.stdout, "CapEff"),
        cap_mask(&["CAP_KILL"]),
        "{o}"
    );
}

#[test]
fn exec_detach() {
    need_root!();
    let c = running("exec-detach", |_| {});
    c.exec_with(
        &["--detach"],
        &["sh", "-c", "sleep 0.1; echo done > /tmp/detached"],
    )
    .ok();
    assert_eq!(c.wait_rootfs_file("tmp/detached").trim(), "done");
}

#[test]
fn exec_cap_adds_capability() {
    need_root!();
    let c = running("exec-cap", |_| {});
    let o = c.exec(&["grep", "^CapEff", "/proc/self/status"]).ok();
    let sys_admin = cap_mask(&["CAP_SYS_ADMIN"]);
    assert_eq!(status_caps(&o.stdout, "CapEff") & sys_admin, 0, "{o}");
    let o = c
        .exec_with(
            &["--cap", "CAP_SYS_ADMIN"],
            &["grep", "^CapEff", "/proc/self/status"],
        )
        .ok();
    assert_ne!(status_caps(&o.stdout, "CapEff") & sys_admin, 0, "{o}");
}

#[test]
fn exec_keeps_the_containers_restrictions() {
    need_root!();
    // An exec'd process gets the container's seccomp filter, no_new_privs, capabilities
    // and rlimits and apparmor-free defaults, like pid 1.
    let c = running("exec-restrict", |c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    });
    let o = c
        .exec(&["sh", "-c", "grep -E '^(Seccomp|NoNewPrivs|Cap(Inh|Amb|Bnd)):' /proc/self/status; mkdir /tmp/d 2>&1; true"])
        .ok();
    assert_eq!(status_field(&o.stdout, "Seccomp"), Some("2"), "{o}");
    assert_eq!(status_field(&o.stdout, "NoNewPrivs"), Some("1"), "{o}");
    assert_eq!(
        status_caps(&o.stdout, "CapBnd"),
        cap_mask(DEFAULT_CAPS),
        "{o}"
    );
    assert_eq!(status_caps(&o.stdout, "CapInh"), 0, "{o}");
    assert_eq!(status_caps(&o.stdout, "CapAmb"), 0, "{o}");
    assert!(o.stdout.contains("Operation not permitted"), "{o}");
}

#[test]
fn exec_in_stopped_container_fails() {
    need_root!();
    let c = Ctr::sh("exec-stopped", "true", |_| {});
    c.create_start();
    c.wait_status("stopped");
    let o = c.exec(&["true"]);
    assert!(!o.success(), "{o}");
}

#[test]
fn exec_missing_binary_fails() {
    need_root!();
    let c = running("exec-missing", |_| {});
    let o = c.exec(&["/no/such/binary"]);
    assert!(!o.success(), "{o}");
    if is_berth() {
        assert!(o.stderr.contains("/no/such/binary"), "{o}");
    }
    assert_eq!(c.status().as_deref(), Some("running"));
}
