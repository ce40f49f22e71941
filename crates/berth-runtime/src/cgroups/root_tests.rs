//! Tier 1: real cgroups on this kernel. These need root; without it they
//! fail, unless BERTH_SKIP_ROOT_TESTS=1 says to skip them.
//!
//! Each test works below its own "/berth-test-<pid>-<n>" cgroup and removes
//! it on the way out, failed or not.

use super::layout::parse_mountinfo;
use super::*;
use oci_spec::runtime::LinuxDeviceType;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// False (skip) only when BERTH_SKIP_ROOT_TESTS=1; panics without root.
fn need_root() -> bool {
    if std::env::var("BERTH_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        return false;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (set BERTH_SKIP_ROOT_TESTS=1 to skip root tests)"
    );
    true
}

fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "berth-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The container cgroup "/<unique>/ctr" plus its parent; Drop kills what is
/// left inside and removes both.
struct TestCgroup {
    cg: Cgroup,
    parent: Cgroup,
    children: Vec<Child>,
}

impl TestCgroup {
    /// On this host's own layout.
    fn host() -> TestCgroup {
        let top = unique();
        TestCgroup {
            cg: Cgroup::resolve(Some(Path::new(&format!("/{top}/ctr"))), "ctr").expect("resolve"),
            parent: Cgroup::resolve(Some(Path::new(&format!("/{top}"))), "p").expect("resolve"),
            children: Vec::new(),
        }
    }

    /// A pure v2 layout on this host's cgroup2 mount (on a hybrid host the
    /// tree has few controllers, but freeze, kill, procs and device
    /// programs work on any cgroup2 directory).
    fn v2() -> TestCgroup {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let u = parse_mountinfo(&mountinfo)
            .unified
            .expect("this host has no cgroup2 mount");
        let line = format!(
            "1 1 0:1 {} {} rw - cgroup2 cgroup2 rw\n",
            u.root.display(),
            u.mount_point.display()
        );
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("proc cgroup");
        let top = unique();
        let cg = Cgroup::resolve_from(&line, &own, Some(Path::new(&format!("/{top}/ctr"))), "ctr")
            .expect("resolve");
        let parent = Cgroup::resolve_from(&line, &own, Some(Path::new(&format!("/{top}"))), "p")
            .expect("resolve");
        assert!(cg.is_v2());
        TestCgroup {
            cg,
            parent,
            children: Vec::new(),
        }
    }

    fn spawn(&mut self, cmd: &mut Command) -> i32 {
        let child = cmd.spawn().expect("spawn");
        let pid = child.id() as i32;
        self.children.push(child);
        pid
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.cg.thaw();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cg.signal_all(libc::SIGKILL);
        if let Err(e) = self.parent.destroy() {
            eprintln!("cleanup: {e}");
        }
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

fn proc_state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .expect("state")
}

fn res(json: &str) -> LinuxResources {
    serde_json::from_str(json).expect("resources")
}

#[test]
fn limits_on_this_host() {
    if !need_root() {
        return;
    }
    let t = TestCgroup::host();
    let cg = &t.cg;
    cg.create().expect("create");
    for dir in cg.all_dirs() {
        assert!(dir.is_dir(), "{} missing", dir.display());
    }
    let r = res(r#"{
        "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 42},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]
    }"#);
    Cgroup::validate(&r).expect("valid");
    cg.apply(&r).expect("apply");
    let has_hugetlb_2mb = Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists();
    if cg.is_v2() {
        let d = cg.unified_dir().expect("unified");
        assert_eq!(read(d, "memory.max"), "67108864");
        assert_eq!(read(d, "memory.low"), "33554432");
        if d.join("memory.swap.max").exists() {
            assert_eq!(read(d, "memory.swap.max"), "67108864");
        }
        assert_eq!(read(d, "cpu.weight"), "20");
        assert_eq!(read(d, "cpu.max"), "50000 100000");
        assert_eq!(read(d, "pids.max"), "42");
        assert_eq!(read(d, "cpuset.cpus"), "0");
        if has_hugetlb_2mb {
            assert_eq!(read(d, "hugetlb.2MB.max"), "4194304");
        }
    } else {
        let mem = cg.v1_dir("memory").expect("memory");
        assert_eq!(read(mem, "memory.limit_in_bytes"), "67108864");
        assert_eq!(read(mem, "memory.soft_limit_in_bytes"), "33554432");
        if mem.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(read(mem, "memory.memsw.limit_in_bytes"), "134217728");
        }
        let cpu = cg.v1_dir("cpu").expect("cpu");
        assert_eq!(read(cpu, "cpu.shares"), "512");
        assert_eq!(read(cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(cpu, "cpu.cfs_period_us"), "100000");
        assert_eq!(read(cg.v1_dir("pids").expect("pids"), "pids.max"), "42");
        assert_eq!(
            read(cg.v1_dir("cpuset").expect("cpuset"), "cpuset.cpus"),
            "0"
        );
        if has_hugetlb_2mb {
            // On this hybrid host hugetlb lives only on the cgroup2 tree.
            match cg.v1_dir("hugetlb") {
                Some(d) => assert_eq!(read(d, "hugetlb.2MB.limit_in_bytes"), "4194304"),
                None => {
                    if let Some(u) = cg
                        .unified_dir()
                        .filter(|u| u.join("hugetlb.2MB.max").exists())
                    {
                        assert_eq!(read(u, "hugetlb.2MB.max"), "4194304");
                    }
                }
            }
        }
        // A raise of memory above the current memory+swap needs the
        // memory+swap write first: exercised by the EINVAL retry.
        let r2 = res(r#"{"memory": {"limit": 268435456, "swap": 536870912}}"#);
        cg.apply(&r2).expect("raise limits");
        assert_eq!(read(mem, "memory.limit_in_bytes"), "268435456");
        // Unlimited again.
        cg.apply(&res(r#"{"memory": {"limit": -1}, "pids": {"limit": -1}}"#))
            .expect("unlimited");
        assert_eq!(read(cg.v1_dir("pids").expect("pids"), "pids.max"), "max");
    }
    // The v1 cpuset parent got its cpus copied too.
    if let Some(cs) = t.parent.v1_dir("cpuset") {
        assert!(!read(cs, "cpuset.cpus").is_empty());
    }
    let s = cg.stats().expect("stats");
    if cg.is_v2() {
        assert_eq!(s.pids.limit, Some(42));
        assert_eq!(s.memory.limit, Some(67_108_864));
    } else {
        assert_eq!(s.pids.limit, None);
        assert_eq!(s.memory.limit, None);
    }
    let json = serde_json::to_string(&s).expect("json");
    assert!(json.contains("usage_total_ns"));
    // Invalid input is refused before any write.
    let e = cg
        .apply(&res(r#"{"cpu": {"shares": 1}}"#))
        .expect_err("invalid");
    assert!(e.is_invalid_input());

    cg.destroy().expect("destroy");
    for dir in cg.all_dirs() {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    // Destroying twice is fine.
    cg.destroy().expect("destroy again");
}

#[test]
fn process_lifecycle_on_this_host() {
    if !need_root() {
        return;
    }
    let mut t = TestCgroup::host();
    t.cg.create().expect("create");
    let pid = t.spawn(Command::new("sleep").arg("1000"));
    t.cg.add_process(pid).expect("add");
    for dir in t.cg.all_dirs() {
        let procs = read(dir, "cgroup.procs");
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{}: {procs}",
            dir.display()
        );
    }
    assert_eq!(t.cg.pids().expect("pids"), vec![pid]);
    let s = t.cg.stats().expect("stats");
    assert!(
        s.pids.current >= 1 || t.cg.v1_dir("pids").is_none(),
        "{s:?}"
    );

    t.cg.freeze().expect("freeze");
    assert!(t.cg.is_frozen().expect("is_frozen"));
    if let Some(f) = t.cg.v1_dir("freezer") {
        assert_eq!(read(f, "freezer.state"), "FROZEN");
    }
    assert_ne!(proc_state(pid), 'R');
    t.cg.thaw().expect("thaw");
    assert!(!t.cg.is_frozen().expect("is_frozen"));

    t.cg.signal_all(libc::SIGKILL).expect("kill");
    let status = t.children[0].wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(t.cg.pids().expect("pids").is_empty());
    t.cg.destroy().expect("destroy");
    for dir in t.cg.all_dirs() {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
}

#[test]
fn v2_freeze_thaw_and_kill() {
    if !need_root() {
        return;
    }
    let mut t = TestCgroup::v2();
    t.cg.create().expect("create");
    let dir = t.cg.unified_dir().expect("dir").to_path_buf();
    let a = t.spawn(Command::new("sleep").arg("1000"));
    let b = t.spawn(Command::new("sleep").arg("1000"));
    t.cg.add_process(a).expect("add a");
    t.cg.add_process(b).expect("add b");
    let mut want = vec![a, b];
    want.sort_unstable();
    assert_eq!(t.cg.pids().expect("pids"), want);

    t.cg.freeze().expect("freeze");
    assert_eq!(read(&dir, "cgroup.freeze"), "1");
    assert!(read(&dir, "cgroup.events").lines().any(|l| l == "frozen 1"));
    assert!(t.cg.is_frozen().expect("frozen"));
    t.cg.thaw().expect("thaw");
    assert!(read(&dir, "cgroup.events").lines().any(|l| l == "frozen 0"));

    // SIGTERM goes the freeze/signal/thaw way; SIGKILL uses cgroup.kill.
    t.cg.signal_all(libc::SIGTERM).expect("term");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        t.children[0].wait().expect("wait").signal(),
        Some(libc::SIGTERM)
    );
    assert_eq!(
        t.children[1].wait().expect("wait").signal(),
        Some(libc::SIGTERM)
    );
    let c = t.spawn(Command::new("sleep").arg("1000"));
    t.cg.add_process(c).expect("add c");
    assert!(
        dir.join("cgroup.kill").exists(),
        "kernel without cgroup.kill"
    );
    t.cg.freeze().expect("freeze");
    t.cg.signal_all(libc::SIGKILL).expect("kill");
    assert_eq!(
        t.children[2].wait().expect("wait").signal(),
        Some(libc::SIGKILL)
    );
    t.cg.thaw().expect("thaw");
    t.cg.destroy().expect("destroy");
    assert!(!dir.exists());
}

/// A shell that waits for a line on stdin, then opens /dev/null and
/// /dev/zero for reading and /dev/null for writing, and reports. The test moves it into the cgroup first.
fn device_probe(t: &mut TestCgroup) -> String {
    let script = "read go; \
        (exec 3</dev/null) 2>&1 && echo null-ok || echo null-denied; \
        (exec 3</dev/zero) 2>&1 && echo zero-ok || echo zero-denied; \
        (exec 3>/dev/null) 2>&1 && echo nullw-ok || echo nullw-denied";
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
    let pid = child.id() as i32;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout");
    t.children.push(child);
    t.cg.add_process(pid).expect("add");
    let mut stdin = stdin.expect("stdin");
    stdin.write_all(b"go\n").expect("go");
    drop(stdin);
    let mut out = String::new();
    for line in BufReader::new(stdout).lines() {
        out.push_str(&line.expect("line"));
        out.push('\n');
    }
    out
}

fn only_dev_null() -> Vec<DeviceRule> {
    vec![DeviceRule {
        allow: true,
        kind: DeviceKind::Char,
        major: Some(1),
        minor: Some(3),
        access: devices::ACC_ALL,
    }]
}

#[test]
fn v2_device_program_allows_only_dev_null() {
    if !need_root() {
        return;
    }
    let mut t = TestCgroup::v2();
    t.cg.create().expect("create");
    t.cg.set_devices(&only_dev_null()).expect("program");
    assert_eq!(t.cg.device_program_ids().expect("ids").len(), 1);
    let out = device_probe(&mut t);
    assert!(out.contains("null-ok") && out.contains("nullw-ok"), "{out}");
    assert!(out.contains("zero-denied"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");

    // apply() replaces the program: spec rules plus the defaults let
    // /dev/zero through again, and only one program stays attached.
    let spec = res(r#"{"devices": [{"allow": false, "access": "rwm"}]}"#);
    t.cg.apply(&spec).expect("apply");
    t.cg.apply(&spec).expect("apply again");
    assert_eq!(t.cg.device_program_ids().expect("ids").len(), 1);
    let out = device_probe(&mut t);
    assert!(out.contains("null-ok") && out.contains("zero-ok"), "{out}");

    // A spec rule denying /dev/zero after the deny-all still loses to the
    // defaults appended after it; one placed via set_devices does not.
    let mut rules = only_dev_null();
    rules.push(DeviceRule {
        allow: false,
        kind: DeviceKind::All,
        major: None,
        minor: None,
        access: devices::ACC_ALL,
    });
    t.cg.set_devices(&rules).expect("deny all last");
    let out = device_probe(&mut t);
    assert!(
        out.contains("null-denied") && out.contains("zero-denied"),
        "{out}"
    );

    // A partial deny: /dev/null read-only. The probe opens for reading.
    let mut rules = only_dev_null();
    rules.push(DeviceRule {
        allow: false,
        access: devices::ACC_WRITE,
        ..rules[0]
    });
    t.cg.set_devices(&rules).expect("read-only null");
    let out = device_probe(&mut t);
    assert!(
        out.contains("null-ok") && out.contains("zero-denied"),
        "{out}"
    );
    assert!(out.contains("nullw-denied"), "{out}");
}

#[test]
fn v1_devices_allow_only_dev_null_on_this_host() {
    if !need_root() {
        return;
    }
    let mut t = TestCgroup::host();
    if t.cg.v1_dir("devices").is_none() {
        // A v2 host: the device program test covers it.
        return;
    }
    t.cg.create().expect("create");
    t.cg.set_devices(&only_dev_null()).expect("rules");
    let list = read(t.cg.v1_dir("devices").expect("devices"), "devices.list");
    assert_eq!(list, "c 1:3 rwm");
    let out = device_probe(&mut t);
    assert!(
        out.contains("null-ok") && out.contains("zero-denied"),
        "{out}"
    );
    let spec = serde_json::from_str::<Vec<oci_spec::runtime::LinuxDeviceCgroup>>(
        r#"[{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"}]"#,
    )
    .expect("rules");
    assert_eq!(spec[1].typ(), Some(LinuxDeviceType::C));
    let mut r = LinuxResources::default();
    r.set_devices(Some(spec));
    t.cg.apply(&r).expect("apply");
    let list = read(t.cg.v1_dir("devices").expect("devices"), "devices.list");
    assert!(list.lines().any(|l| l == "c 1:5 rwm"), "defaults: {list}");
}

#[test]
fn creates_survive_a_shared_parent_being_removed() {
    if !need_root() {
        return;
    }
    // Several creators share one parent that each of them removes when it
    // looks empty (as a cleanup does); a create must never fail for it.
    let top = unique();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let top = top.clone();
            std::thread::spawn(move || {
                let parent =
                    Cgroup::resolve(Some(Path::new(&format!("/{top}"))), "p").expect("resolve");
                for i in 0..25 {
                    let cg = Cgroup::resolve(Some(Path::new(&format!("/{top}/c{t}-{i}"))), "c")
                        .expect("resolve");
                    cg.create()
                        .unwrap_or_else(|e| panic!("create /{top}/c{t}-{i}: {e}"));
                    cg.destroy().expect("destroy");
                    let _ = parent.destroy();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("creator thread");
    }
    let parent = Cgroup::resolve(Some(Path::new(&format!("/{top}"))), "p").expect("resolve");
    let _ = parent.destroy();
}
