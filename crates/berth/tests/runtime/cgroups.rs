//! config-linux.md "cgroupsPath" and "resources": limits read back from the host side
//! (the container's cgroup under its cgroupsPath, v1 or v2) and from inside.

use crate::harness::*;
use serde_json::json;
use std::fs;

/// Starts a container running `script` then `echo ready > /tmp/ready` and a wait loop.
fn running(tag: &str, script: &str, tweak: impl FnOnce(&mut serde_json::Value)) -> Ctr {
    let c = Ctr::sh(
        tag,
        &format!("{script}; echo ready > /tmp/ready; while :; do sleep 0.05; done"),
        tweak,
    );
    c.create_start();
    c.wait_rootfs_file("tmp/ready");
    c
}

#[test]
fn cgroup_process_is_in_its_cgroups_path() {
    need_root!();
    let c = running("cg-path", "true", |_| {});
    let pid = c.pid().to_string();
    let dirs = c.cgroup_dirs();
    assert!(!dirs.is_empty(), "no cgroup dir for {}", c.cgroups_path);
    let mut found = 0;
    for d in &dirs {
        let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        if procs.lines().any(|l| l == pid) {
            found += 1;
        }
    }
    assert!(found > 0, "pid {pid} in none of {dirs:?}");
    // Every hierarchy the process is in shows the cgroupsPath.
    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for l in cg.lines() {
        let path = l.splitn(3, ':').nth(2).unwrap_or_default();
        if l.starts_with("0::") && cgroup_v1_mount("memory").is_some() {
            continue; // hybrid host: the unified hierarchy may be left alone
        }
        assert_eq!(path, c.cgroups_path, "{l}\n{cg}");
    }
}

#[test]
fn cgroup_memory_limit() {
    need_root!();
    let c = running(
        "cg-memory",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null > /tmp/limit",
        |c| {
            c["linux"]["resources"]["memory"] = json!({"limit": 67108864, "reservation": 33554432});
        },
    );
    let limit = read_trim(c.cgroup_file("memory", "memory.limit_in_bytes", "memory.max"));
    assert_eq!(limit, "67108864");
    let low = read_trim(c.cgroup_file("memory", "memory.soft_limit_in_bytes", "memory.low"));
    assert_eq!(low, "33554432");
    assert_eq!(
        c.read_rootfs("tmp/limit").unwrap_or_default().trim(),
        "67108864"
    );
}

#[test]
fn cgroup_memory_limit_is_enforced() {
    need_root!();
    // 48 MiB written to a tmpfs (charged to the writer's memory cgroup) under a 16 MiB
    // limit and no swap: the writer is OOM-killed or its write fails.
    let o = run_sh(
        "cg-oom",
        "dd if=/dev/zero of=/dev/shm/fill bs=1048576 count=48 2>/dev/null && echo survived",
        |c| {
            c["linux"]["resources"]["memory"] = json!({"limit": 16777216, "swap": 16777216});
        },
    );
    assert!(!o.stdout.contains("survived"), "no memory limit: {o}");
}

#[test]
fn cgroup_pids_limit() {
    need_root!();
    let c = Ctr::sh(
        "cg-pids",
        "exec > /tmp/out 2>&1; for i in $(seq 1 30); do sleep 10 & done; echo forked-all",
        |c| {
            c["linux"]["resources"]["pids"] = json!({"limit": 10});
        },
    );
    c.create().ok();
    assert_eq!(
        read_trim(c.cgroup_file("pids", "pids.max", "pids.max")),
        "10"
    );
    c.start().ok();
    c.wait_status("stopped");
    let out = c.read_rootfs("tmp/out").unwrap_or_default();
    assert!(
        !out.contains("forked-all"),
        "30 forks under pids.max=10: {out}"
    );
    assert!(
        out.contains("fork") || out.contains("Resource temporarily unavailable"),
        "{out}"
    );
}

#[test]
fn cgroup_cpu_shares_and_quota() {
    need_root!();
    let c = Ctr::sh("cg-cpu", "true", |c| {
        c["linux"]["resources"]["cpu"] = json!({"shares": 512, "quota": 50000, "period": 100000});
    });
    c.create().ok();
    if cgroup_v1_mount("cpu").is_some() {
        assert_eq!(read_trim(c.cgroup_file("cpu", "cpu.shares", "")), "512");
        assert_eq!(
            read_trim(c.cgroup_file("cpu", "cpu.cfs_quota_us", "")),
            "50000"
        );
        assert_eq!(
            read_trim(c.cgroup_file("cpu", "cpu.cfs_period_us", "")),
            "100000"
        );
    } else {
        assert_eq!(
            read_trim(c.cgroup_file("cpu", "", "cpu.max")),
            "50000 100000"
        );
        // shares 512 → weight 1 + (512 - 2) * 9999 / 262142 = 20
        assert_eq!(read_trim(c.cgroup_file("cpu", "", "cpu.weight")), "20");
    }
}

#[test]
fn cgroup_cpuset() {
    need_root!();
    let c = running(
        "cg-cpuset",
        "grep Cpus_allowed_list /proc/self/status > /tmp/cpus",
        |c| {
            c["linux"]["resources"]["cpu"] = json!({"cpus": "0", "mems": "0"});
        },
    );
    assert_eq!(
        read_trim(c.cgroup_file("cpuset", "cpuset.cpus", "cpuset.cpus")),
        "0"
    );
    assert_eq!(
        read_trim(c.cgroup_file("cpuset", "cpuset.mems", "cpuset.mems")),
        "0"
    );
    let inner = c.read_rootfs("tmp/cpus").unwrap_or_default();
    assert_eq!(
        status_field(&inner, "Cpus_allowed_list"),
        Some("0"),
        "{inner}"
    );
}

/// A char device with major 42 ("for demo and sample use", never a real driver): the
/// devices cgroup decides at open(2) before any driver, so a denied open gives EPERM and
/// an allowed one ENXIO.
const EXP_DEVICE: &str = "/dev/berth-exp";

fn open_exp_device(tag: &str, allow: bool) -> Out {
    run_sh(tag, &format!("cat {EXP_DEVICE}"), |c| {
        c["linux"]["devices"] = json!([
            {"path": EXP_DEVICE, "type": "c", "major": 42, "minor": 0, "fileMode": 0o666}
        ]);
        if allow {
            c["linux"]["resources"]["devices"]
                .as_array_mut()
                .unwrap()
                .push(
                    json!({"allow": true, "type": "c", "major": 42, "minor": 0, "access": "rwm"}),
                );
        }
    })
}

#[test]
fn cgroup_devices_denied_device_cannot_be_opened() {
    need_root!();
    let denied = open_exp_device("cg-dev-deny", false);
    assert!(
        denied.stderr.contains("Operation not permitted"),
        "{denied}"
    );
    let allowed = open_exp_device("cg-dev-allow", true);
    assert!(
        allowed.stderr.contains("No such device or address"),
        "{allowed}"
    );
}

#[test]
fn cgroup_devices_default_devices_are_allowed() {
    need_root!();
    // With "deny all" in resources.devices, the default devices still work.
    let o = run_sh(
        "cg-dev-default",
        "echo > /dev/null && head -c 1 /dev/zero > /dev/null && head -c 1 /dev/urandom > /dev/null \
         && head -c 1 /dev/random > /dev/null && echo ok",
        |_| {},
    )
    .ok();
    assert_eq!(o.out(), "ok", "{o}");
}
