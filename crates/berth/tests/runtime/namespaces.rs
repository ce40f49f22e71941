//! config-linux.md "namespaces", user namespace mappings and time offsets.

use crate::harness::*;
use serde_json::json;
use std::fs;

const KINDS: [(&str, &str); 6] = [
    ("pid", "pid"),
    ("network", "net"),
    ("ipc", "ipc"),
    ("uts", "uts"),
    ("mount", "mnt"),
    ("cgroup", "cgroup"),
];

/// `readlink /proc/self/ns/<name>` of this test process, e.g. `net:[4026531840]`.
fn host_ns(name: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{name}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn ns_script() -> String {
    KINDS
        .iter()
        .map(|(_, n)| format!("echo {n}=$(readlink /proc/self/ns/{n});"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn inner_ns(o: &Out, name: &str) -> String {
    o.lines()
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(String::from))
        .unwrap_or_else(|| panic!("no {name} in {o}"))
}

#[test]
fn namespaces_listed_are_new() {
    need_root!();
    let o = run_sh("ns-new", &ns_script(), |_| {}).ok();
    for (_, n) in KINDS {
        assert_ne!(
            inner_ns(&o, n),
            host_ns(n),
            "{n} namespace is the host's: {o}"
        );
    }
}

#[test]
fn namespaces_not_listed_are_the_hosts() {
    need_root!();
    let o = run_sh("ns-host", &ns_script(), |c| {
        for kind in ["network", "ipc", "uts", "cgroup"] {
            drop_namespace(c, kind);
        }
        c.as_object_mut().unwrap().remove("hostname");
        drop_mount(c, "/sys/fs/cgroup");
    })
    .ok();
    for n in ["net", "ipc", "uts", "cgroup"] {
        assert_eq!(
            inner_ns(&o, n),
            host_ns(n),
            "{n} namespace is not the host's: {o}"
        );
    }
    for n in ["pid", "mnt"] {
        assert_ne!(inner_ns(&o, n), host_ns(n), "{n}: {o}");
    }
}

#[test]
fn namespace_pid_process_is_pid_1() {
    need_root!();
    let o = run_sh(
        "ns-pid",
        "echo self=$$; ps -o pid,args | awk '$1 == 1 { print \"pid1=\" $2 \" \" $3 }'; \
         echo procs=$(ls -d /proc/[0-9]* | wc -l)",
        |_| {},
    )
    .ok();
    let l = o.lines();
    assert_eq!(l[0], "self=1", "{o}");
    assert_eq!(l[1], "pid1=sh -c", "{o}");
    let procs: u32 = l[2].trim_start_matches("procs=").parse().unwrap();
    assert!(procs <= 4, "host processes visible: {o}");
}

#[test]
fn namespace_network_has_only_loopback() {
    need_root!();
    let o = run_sh(
        "ns-net",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ls /sys/class/net",
        |_| {},
    )
    .ok();
    assert_eq!(o.lines(), ["lo", "lo"], "{o}");
}

#[test]
fn namespace_cgroup_root_is_slash() {
    need_root!();
    let o = run_sh("ns-cgroup", "cat /proc/self/cgroup", |_| {}).ok();
    assert!(!o.lines().is_empty(), "{o}");
    for l in o.lines() {
        assert!(
            l.ends_with(":/"),
            "cgroup path is not / in the cgroup namespace: {l}\n{o}"
        );
    }
}

#[test]
fn namespace_cgroup_absent_shows_host_path() {
    need_root!();
    let c = Ctr::sh("ns-cgroup-host", "cat /proc/self/cgroup", |c| {
        drop_namespace(c, "cgroup");
    });
    let o = c.run().ok();
    assert!(
        o.lines().iter().any(|l| l.ends_with(&c.cgroups_path)),
        "no line with {}: {o}",
        c.cgroups_path
    );
}

#[test]
fn namespace_mount_changes_stay_inside() {
    need_root!();
    let c = Ctr::sh(
        "ns-mnt",
        "mkdir -p /m && mount -t tmpfs none /m && echo mounted",
        |c| {
            c["process"]["capabilities"] = json!({
                "bounding": ["CAP_SYS_ADMIN"], "permitted": ["CAP_SYS_ADMIN"], "effective": ["CAP_SYS_ADMIN"]
            });
        },
    );
    let o = c.run().ok();
    assert_eq!(o.out(), "mounted", "{o}");
    assert!(
        c.host_mounts().is_empty(),
        "container mount visible on the host"
    );
}

#[test]
fn namespace_user_with_mappings() {
    need_root!();
    let c = Ctr::sh(
        "ns-user",
        "{ id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; stat -c %u:%g /bin/busybox; } \
         > /tmp/info 2>&1; echo ready > /tmp/ready; while :; do sleep 0.05; done",
        |c| {
            set_namespace(c, json!({"type": "user"}));
            c["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            c["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        },
    );
    c.create_start();
    c.wait_rootfs_file("tmp/ready");
    let pid = c.pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        status_field(&status, "Uid").map(|v| v.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["100000"; 4]),
        "host view of the container process: {status}"
    );
    assert_eq!(
        status_field(&status, "Gid").map(|v| v.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["100000"; 4]),
        "{status}"
    );
    let host_uid_map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let fields: Vec<&str> = host_uid_map.split_whitespace().collect();
    assert_eq!(fields, ["0", "100000", "65536"], "{host_uid_map}");
    assert_ne!(
        fs::read_link(format!("/proc/{pid}/ns/user")).unwrap(),
        fs::read_link("/proc/self/ns/user").unwrap()
    );
    // Inside: root, with the mapping, and host root's files show as the overflow id.
    let inner = c.read_rootfs("tmp/info").unwrap_or_default();
    let lines: Vec<Vec<&str>> = inner
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0"], "{inner}");
    assert_eq!(lines[1], ["0"], "{inner}");
    assert_eq!(lines[2], ["0", "100000", "65536"], "{inner}");
    assert_eq!(lines[3], ["0", "100000", "65536"], "{inner}");
    assert_eq!(lines[4], ["65534:65534"], "{inner}");
}

#[test]
fn namespace_time_offsets() {
    need_root!();
    if !supports_namespace("time") {
        eprintln!(
            "skipped: {} has no time namespace (features)",
            runtime_name()
        );
        return;
    }
    let year = 365 * 86400;
    let o = run_sh(
        "ns-time",
        "cat /proc/uptime; cat /proc/self/timens_offsets",
        |c| {
            set_namespace(c, json!({"type": "time"}));
            c["linux"]["timeOffsets"] = json!({
                "boottime": {"secs": year, "nanosecs": 0},
                "monotonic": {"secs": 2 * year, "nanosecs": 0}
            });
        },
    )
    .ok();
    let l = o.lines();
    let uptime: f64 = l[0].split_whitespace().next().unwrap().parse().unwrap();
    assert!(uptime >= year as f64, "boottime offset not applied: {o}");
    let host_uptime: f64 = read_trim("/proc/uptime")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(uptime < host_uptime + year as f64 + 60.0, "{o}");
    let offsets: Vec<Vec<&str>> = l[1..]
        .iter()
        .map(|x| x.split_whitespace().collect())
        .collect();
    assert!(
        offsets.contains(&vec!["monotonic", &(2 * year).to_string(), "0"]),
        "{o}"
    );
    assert!(
        offsets.contains(&vec!["boottime", &year.to_string(), "0"]),
        "{o}"
    );
}

#[test]
fn namespace_join_uts_of_another_container() {
    need_root!();
    let first = Ctr::sh(
        "ns-join-a",
        "echo ready > /tmp/ready; while :; do sleep 0.05; done",
        |c| {
            c["hostname"] = json!("first-host");
        },
    );
    first.create_start();
    first.wait_rootfs_file("tmp/ready");
    let pid = first.pid();
    let path = format!("/proc/{pid}/ns/uts");
    let o = run_sh("ns-join-b", "hostname; readlink /proc/self/ns/uts", |c| {
        c.as_object_mut().unwrap().remove("hostname");
        set_namespace(c, json!({"type": "uts", "path": path}));
    })
    .ok();
    let want_ns = fs::read_link(&path).unwrap().to_string_lossy().into_owned();
    assert_eq!(o.lines(), ["first-host".to_string(), want_ns], "{o}");
    // The first container is unaffected.
    assert_eq!(first.status().as_deref(), Some("running"));
}

/// A named network namespace (`ip netns add`), deleted on drop.
struct NetNs(String);

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[test]
fn namespace_join_network_by_path() {
    need_root!();
    let name = unique_id("netns");
    let st = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .expect("ip netns add (iproute2)");
    assert!(st.success(), "ip netns add {name} failed");
    let _guard = NetNs(name.clone());
    let st = std::process::Command::new("ip")
        .args(["-n", &name, "link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(st.success());
    let path = format!("/run/netns/{name}");
    let o = run_sh(
        "ns-join-net",
        "readlink /proc/self/ns/net; cat /sys/class/net/lo/operstate",
        |c| {
            set_namespace(c, json!({"type": "network", "path": path}));
        },
    )
    .ok();
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(&path).unwrap().ino();
    let l = o.lines();
    assert_eq!(l[0], format!("net:[{ino}]"), "{o}");
    // lo is up in that namespace (a fresh one has it down).
    assert_eq!(l[1], "unknown", "{o}");
}

#[test]
fn namespace_join_bad_path_fails() {
    need_root!();
    let c = Ctr::sh("ns-bad-path", "true", |c| {
        set_namespace(
            c,
            json!({"type": "network", "path": "/proc/self/ns/does-not-exist"}),
        );
    });
    let o = c.create().fails();
    if is_berth() {
        assert!(o.stderr.contains("does-not-exist"), "{o}");
    }
    c.assert_nothing_left();
}

#[test]
fn namespace_join_user_by_path_owns_the_new_namespaces() {
    need_root!();
    berth_only!("joining a user namespace while making new ones (runc 1.1 refuses it)");
    // The second container joins the first's user namespace and makes its own
    // mount, pid, … namespaces, which must belong to that user namespace (or
    // its mounts would be refused).
    let userns = |c: &mut serde_json::Value| {
        set_namespace(c, json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    };
    let first = Ctr::sh(
        "ns-userjoin-a",
        "echo ready > /tmp/ready; while :; do sleep 0.05; done",
        userns,
    );
    first.create_start();
    first.wait_rootfs_file("tmp/ready");
    let path = format!("/proc/{}/ns/user", first.pid());
    let want = fs::read_link(&path).unwrap().to_string_lossy().into_owned();
    let o = run_sh(
        "ns-userjoin-b",
        "readlink /proc/self/ns/user; cat /proc/self/uid_map; id -u; ls /proc/1/ns >/dev/null && echo mounted",
        |c| set_namespace(c, json!({"type": "user", "path": path})),
    )
    .ok();
    let lines = o.lines();
    assert_eq!(lines[0], want, "{o}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"],
        "{o}"
    );
    assert_eq!(lines[2], "0", "{o}");
    assert_eq!(lines[3], "mounted", "{o}");
}
