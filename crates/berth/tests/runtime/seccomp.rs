//! config-linux.md "seccomp": filters installed for the container process.

use crate::harness::*;
use serde_json::{json, Value};

const ARCHES: [&str; 3] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

fn profile(default_action: &str, syscalls: Value) -> Value {
    json!({ "defaultAction": default_action, "architectures": ARCHES, "syscalls": syscalls })
}

#[test]
fn seccomp_errno_rule_blocks_mkdir() {
    need_root!();
    let c = Ctr::sh(
        "seccomp-mkdir",
        "grep -E '^Seccomp:' /proc/self/status; mkdir /tmp/x 2>&1; touch /tmp/y && echo touch-ok",
        |c| {
            c["linux"]["seccomp"] = profile(
                "SCMP_ACT_ALLOW",
                json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]),
            );
        },
    );
    let o = c.run().ok();
    let l = o.lines();
    assert_eq!(
        status_field(&l[0], "Seccomp"),
        Some("2"),
        "no seccomp filter: {o}"
    );
    assert!(l[1].contains("Operation not permitted"), "{o}");
    assert_eq!(l[2], "touch-ok", "{o}");
    assert!(!c.rootfs().join("tmp/x").exists());
}

#[test]
fn seccomp_errno_ret_is_used() {
    need_root!();
    let o = run_sh("seccomp-errnoret", "mkdir /tmp/x 2>&1", |c| {
        c["linux"]["seccomp"] = profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]),
        );
    });
    assert!(
        o.stdout.contains("Permission denied"),
        "errnoRet 13 (EACCES) not used: {o}"
    );
}

#[test]
fn seccomp_args_condition() {
    need_root!();
    // chmod to mode 0777 is refused, other modes are not.
    let o = run_sh(
        "seccomp-args",
        "touch /tmp/f; chmod 755 /tmp/f && echo 755-ok; chmod 777 /tmp/f 2>&1; stat -c %a /tmp/f",
        |c| {
            c["linux"]["seccomp"] = profile(
                "SCMP_ACT_ALLOW",
                json!([
                    {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                     "args": [{"index": 1, "value": 0o777, "op": "SCMP_CMP_EQ"}]},
                    {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                     "args": [{"index": 2, "value": 0o777, "op": "SCMP_CMP_EQ"}]}
                ]),
            );
        },
    )
    .ok();
    let l = o.lines();
    assert_eq!(l[0], "755-ok", "{o}");
    assert!(l[1].contains("Operation not permitted"), "{o}");
    assert_eq!(l[2], "755", "{o}");
}

#[test]
fn seccomp_kill_action() {
    need_root!();
    let o = run_sh(
        "seccomp-kill",
        "(hostname foo 2>/dev/null); echo status=$?",
        |c| {
            c["linux"]["seccomp"] = profile(
                "SCMP_ACT_ALLOW",
                json!([{"names": ["sethostname"], "action": "SCMP_ACT_KILL_PROCESS"}]),
            );
        },
    )
    .ok();
    // SIGSYS is 31: the shell reports 128 + 31 (without the filter, sethostname fails with
    // EPERM: no CAP_SYS_ADMIN, status 1). The subshell: busybox may run applets in-process.
    assert_eq!(o.out(), "status=159", "{o}");
}

#[test]
fn seccomp_applies_without_no_new_privileges_for_non_root() {
    need_root!();
    // Without noNewPrivileges a non-root process could not install a filter itself: the
    // runtime must install it while it still has CAP_SYS_ADMIN.
    let o = run_sh(
        "seccomp-nnp-off",
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /tmp/u 2>&1; true",
        |c| {
            c["process"]["noNewPrivileges"] = json!(false);
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
            c["linux"]["seccomp"] = profile(
                "SCMP_ACT_ALLOW",
                json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]),
            );
        },
    )
    .ok();
    assert_eq!(status_field(&o.stdout, "NoNewPrivs"), Some("0"), "{o}");
    assert_eq!(status_field(&o.stdout, "Seccomp"), Some("2"), "{o}");
    assert!(o.stdout.contains("Operation not permitted"), "{o}");
}

/// Docker's default profile (shared/reference/seccomp-default.json) in OCI form: its
/// defaultAction, defaultErrnoRet, the x86 architectures of its archMap, and for each rule
/// the names, action, args and errnoRet (includes/excludes are dropped).
pub fn docker_default_profile() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/seccomp-default.json"
    );
    let path = std::path::Path::new(path);
    let path = if path.exists() {
        path.to_path_buf()
    } else {
        std::path::PathBuf::from("/work/shared/reference/seccomp-default.json")
    };
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (Docker's default seccomp profile)", path.display()));
    let docker: Value = serde_json::from_str(&text).expect("seccomp profile JSON");
    let mut arches = Vec::new();
    for a in docker["archMap"].as_array().into_iter().flatten() {
        if a["architecture"] == "SCMP_ARCH_X86_64" {
            arches.push(a["architecture"].clone());
            arches.extend(
                a["subArchitectures"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    }
    let syscalls: Vec<Value> = docker["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .map(|s| {
            let mut r = json!({ "names": s["names"], "action": s["action"] });
            if let Some(args) = s["args"].as_array() {
                r["args"] = json!(args
                    .iter()
                    .map(|a| {
                        let mut x =
                            json!({"index": a["index"], "value": a["value"], "op": a["op"]});
                        if a["valueTwo"].as_u64().unwrap_or(0) != 0 {
                            x["valueTwo"] = a["valueTwo"].clone();
                        }
                        x
                    })
                    .collect::<Vec<_>>());
            }
            if s.get("errnoRet").is_some() {
                r["errnoRet"] = s["errnoRet"].clone();
            }
            r
        })
        .collect();
    let mut p = json!({
        "defaultAction": docker["defaultAction"],
        "architectures": arches,
        "syscalls": syscalls
    });
    if docker.get("defaultErrnoRet").is_some() {
        p["defaultErrnoRet"] = docker["defaultErrnoRet"].clone();
    }
    p
}

#[test]
fn seccomp_docker_default_profile_runs_busybox() {
    need_root!();
    let o = run_sh(
        "seccomp-docker",
        "ls / > /dev/null && echo ls-ok; grep -E '^Seccomp:' /proc/self/status; \
         touch /tmp/f && chmod 600 /tmp/f && echo chmod-ok; ps > /dev/null && echo ps-ok",
        |c| {
            c["linux"]["seccomp"] = docker_default_profile();
        },
    )
    .ok();
    let l = o.lines();
    assert_eq!(l[0], "ls-ok", "{o}");
    assert_eq!(status_field(&l[1], "Seccomp"), Some("2"), "{o}");
    assert_eq!(&l[2..], ["chmod-ok", "ps-ok"], "{o}");
}

#[test]
fn seccomp_default_errno_blocks_unlisted_syscalls() {
    need_root!();
    // With Docker's profile minus mkdir/mkdirat, mkdir hits the default action
    // (SCMP_ACT_ERRNO with defaultErrnoRet 1 = EPERM).
    let mut p = docker_default_profile();
    for rule in p["syscalls"].as_array_mut().unwrap() {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| n != "mkdir" && n != "mkdirat");
        }
    }
    let o = run_sh(
        "seccomp-default-errno",
        "mkdir /tmp/x 2>&1; echo end",
        |c| {
            c["linux"]["seccomp"] = p;
        },
    )
    .ok();
    assert!(o.stdout.contains("Operation not permitted"), "{o}");
}

#[test]
fn seccomp_unknown_action_fails() {
    need_root!();
    let c = Ctr::sh("seccomp-bad", "true", |c| {
        c["linux"]["seccomp"] = profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir"], "action": "SCMP_ACT_BOGUS"}]),
        );
    });
    let o = c.run().fails();
    if is_berth() {
        assert!(o.stderr.contains("SCMP_ACT_BOGUS"), "{o}");
    }
    c.assert_nothing_left();
}
