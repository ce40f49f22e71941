//! config.md "root" and "mounts", config-linux.md default filesystems and devices,
//! maskedPaths, readonlyPaths, devices, rootfsPropagation: checked in the container's
//! own /proc/self/mountinfo.

use crate::harness::*;
use serde_json::json;
use std::fs;
use std::path::Path;

/// Runs `cat /proc/self/mountinfo` (plus `extra`) in a container, returns the parsed
/// mount table and the output.
fn inner_mounts(
    tag: &str,
    extra: &str,
    tweak: impl FnOnce(&mut serde_json::Value),
) -> (Vec<MountInfo>, Out) {
    let o = run_sh(
        tag,
        &format!("cat /proc/self/mountinfo; echo ---; {extra}"),
        tweak,
    )
    .ok();
    let table = o
        .stdout
        .split("\n---\n")
        .next()
        .unwrap_or_default()
        .to_string();
    (parse_mountinfo(&table), o)
}

fn after_marker(o: &Out) -> Vec<String> {
    o.stdout
        .split("\n---\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[track_caller]
fn expect_mount<'a>(m: &'a [MountInfo], path: &str, fstype: &str, o: &Out) -> &'a MountInfo {
    let e = mount_at(m, path).unwrap_or_else(|| panic!("no mount at {path}: {o}"));
    assert_eq!(e.fstype, fstype, "{path}: {e:?}");
    e
}

#[test]
fn mounts_standard_filesystems() {
    need_root!();
    let (m, o) = inner_mounts("std-mounts", "true", |_| {});
    expect_mount(&m, "/proc", "proc", &o);
    let sys = expect_mount(&m, "/sys", "sysfs", &o);
    assert!(sys.has_opt("ro"), "/sys not ro: {sys:?}");
    let dev = expect_mount(&m, "/dev", "tmpfs", &o);
    assert!(dev.has_opt("nosuid"), "{dev:?}");
    assert!(dev.has_super_opt("mode=755"), "{dev:?}");
    let pts = expect_mount(&m, "/dev/pts", "devpts", &o);
    assert!(pts.has_opt("nosuid") && pts.has_opt("noexec"), "{pts:?}");
    for opt in ["gid=5", "mode=620", "ptmxmode=666"] {
        assert!(pts.has_super_opt(opt), "/dev/pts lacks {opt}: {pts:?}");
    }
    let shm = expect_mount(&m, "/dev/shm", "tmpfs", &o);
    for opt in ["nosuid", "noexec", "nodev"] {
        assert!(shm.has_opt(opt), "/dev/shm lacks {opt}: {shm:?}");
    }
    assert!(shm.has_super_opt("size=65536k"), "{shm:?}");
    let mq = expect_mount(&m, "/dev/mqueue", "mqueue", &o);
    assert!(
        mq.has_opt("nosuid") && mq.has_opt("noexec") && mq.has_opt("nodev"),
        "{mq:?}"
    );
    let cg = mount_at(&m, "/sys/fs/cgroup").unwrap_or_else(|| panic!("no /sys/fs/cgroup: {o}"));
    assert!(
        cg.fstype == "cgroup2" || cg.fstype == "tmpfs",
        "/sys/fs/cgroup is {cg:?}"
    );
    if cg.fstype == "cgroup2" {
        assert!(cg.has_opt("ro"), "/sys/fs/cgroup not ro: {cg:?}");
    } else {
        // v1: a tmpfs with one read-only mount per hierarchy.
        let hier: Vec<&MountInfo> = m
            .iter()
            .filter(|x| x.mount_point.starts_with("/sys/fs/cgroup/"))
            .collect();
        assert!(
            !hier.is_empty(),
            "no cgroup hierarchies under /sys/fs/cgroup: {o}"
        );
        for h in hier {
            assert!(h.fstype == "cgroup" || h.fstype == "cgroup2", "{h:?}");
            assert!(h.has_opt("ro"), "{} not ro: {h:?}", h.mount_point);
        }
    }
    // Nothing of the host's mount table leaks in: every mount is under the rootfs.
    assert!(
        !m.iter()
            .any(|x| x.mount_point.starts_with("/tmp/") || x.mount_point == "/work"),
        "host mounts visible: {o}"
    );
}

#[test]
fn mounts_tmpfs_options() {
    need_root!();
    let (m, o) = inner_mounts(
        "tmpfs-opts",
        "stat -c %a /scratch; df -k /scratch | tail -1",
        |c| {
            add_mount(
                c,
                json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "size=1m", "mode=1750"]}),
            );
        },
    );
    let s = expect_mount(&m, "/scratch", "tmpfs", &o);
    assert!(
        s.has_opt("nosuid") && s.has_opt("nodev") && !s.has_opt("noexec"),
        "{s:?}"
    );
    assert!(s.has_super_opt("size=1024k"), "{s:?}");
    assert!(s.has_super_opt("mode=1750"), "{s:?}");
    let lines = after_marker(&o);
    assert_eq!(lines[0], "1750", "{o}");
    assert_eq!(lines[1].split_whitespace().nth(1), Some("1024"), "{o}");
}

#[test]
fn mounts_bind_with_flags() {
    need_root!();
    let mut c = Ctr::sh(
        "bind-flags",
        "cat /proc/self/mountinfo; echo ---; cat /ro/hello; touch /ro/new 2>&1; \
         /ro/busybox true 2>&1; cp /bin/busybox /rw/busybox && /rw/busybox true && echo exec-ok; \
         echo written > /rw/out",
        |_| {},
    );
    let ro = c.host_dir().join("ro");
    let rw = c.host_dir().join("rw");
    fs::create_dir(&ro).unwrap();
    fs::create_dir(&rw).unwrap();
    fs::write(ro.join("hello"), "hello\n").unwrap();
    fs::hard_link(c.rootfs().join("bin/busybox"), ro.join("busybox"))
        .or_else(|_| fs::copy(c.rootfs().join("bin/busybox"), ro.join("busybox")).map(|_| ()))
        .unwrap();
    c.tweak(|cfg| {
        add_mount(
            cfg,
            json!({"destination": "/ro", "type": "bind", "source": ro,
        "options": ["bind", "ro", "nosuid", "noexec", "nodev"]}),
        );
        add_mount(
            cfg,
            json!({"destination": "/rw", "type": "bind", "source": rw,
        "options": ["rbind", "rw"]}),
        );
    });
    let o = c.run().ok();
    let table = o.stdout.split("\n---\n").next().unwrap();
    let m = parse_mountinfo(table);
    let r = mount_at(&m, "/ro").unwrap_or_else(|| panic!("no /ro: {o}"));
    for opt in ["ro", "nosuid", "noexec", "nodev"] {
        assert!(r.has_opt(opt), "/ro lacks {opt}: {r:?}");
    }
    let w = mount_at(&m, "/rw").unwrap_or_else(|| panic!("no /rw: {o}"));
    assert!(w.has_opt("rw") && !w.has_opt("noexec"), "{w:?}");
    let lines = after_marker(&o);
    assert_eq!(lines[0], "hello", "{o}");
    assert!(lines[1].contains("Read-only file system"), "{o}");
    assert!(
        lines[2].contains("Permission denied"),
        "exec on a noexec mount: {o}"
    );
    assert!(lines.contains(&"exec-ok".to_string()), "{o}");
    assert_eq!(read_trim(rw.join("out")), "written");
    assert!(!ro.join("new").exists());
}

#[test]
fn mounts_bind_file_and_missing_destination() {
    need_root!();
    let mut c = Ctr::sh(
        "bind-file",
        "cat /etc/berth-file; ls -d /new/deep/dir; stat -c %F /etc/berth-file",
        |_| {},
    );
    let f = c.host_dir().join("file");
    fs::write(&f, "file-content\n").unwrap();
    c.tweak(|cfg| {
        add_mount(
            cfg,
            json!({"destination": "/etc/berth-file", "type": "bind", "source": f,
        "options": ["bind", "ro"]}),
        );
        add_mount(
            cfg,
            json!({"destination": "/new/deep/dir", "type": "tmpfs", "source": "tmpfs"}),
        );
    });
    let o = c.run().ok();
    assert_eq!(
        o.lines(),
        ["file-content", "/new/deep/dir", "regular file"],
        "{o}"
    );
}

#[test]
fn mounts_rbind_includes_submounts_and_bind_does_not() {
    need_root!();
    let mut c = Ctr::sh("rbind", "cat /r/sub/f 2>&1; ls -A /b/sub; echo end", |_| {});
    let src = c.host_dir().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    c.tweak(|cfg| {
        add_mount(
            cfg,
            json!({"destination": "/r", "type": "bind", "source": src, "options": ["rbind"]}),
        );
        add_mount(
            cfg,
            json!({"destination": "/b", "type": "bind", "source": src, "options": ["bind"]}),
        );
    });
    // The submount is made in a private mount namespace that the runtime runs in, so the
    // host's mount table is never touched.
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=1m tmpfs \"$1/sub\" && echo in-submount > \"$1/sub/f\" && shift && exec \"$@\"")
        .arg("sh")
        .arg(&src)
        .arg(runtime_bin())
        .arg("--root")
        .arg(c.state_root())
        .args(["run", "--bundle"])
        .arg(c.bundle())
        .arg(&c.id)
        .current_dir(c.bundle());
    let o = c.run_cmd(cmd, None).ok();
    assert_eq!(o.lines(), ["in-submount", "end"], "{o}");
}

#[test]
fn mounts_readonly_root() {
    need_root!();
    let (m, o) = inner_mounts(
        "ro-root",
        "touch /newfile 2>&1; echo ok > /dev/shm/x && cat /dev/shm/x",
        |c| {
            c["root"]["readonly"] = json!(true);
        },
    );
    let root = mount_at(&m, "/").unwrap_or_else(|| panic!("no / mount: {o}"));
    assert!(root.has_opt("ro"), "root not ro: {root:?}");
    let lines = after_marker(&o);
    assert!(lines[0].contains("Read-only file system"), "{o}");
    assert_eq!(lines[1], "ok", "{o}");
}

#[test]
fn mounts_masked_paths() {
    need_root!();
    let c = Ctr::sh(
        "masked",
        "[ -e /proc/kcore ] && echo kcore=$(wc -c < /proc/kcore) || echo kcore=0; echo keys=$(cat /proc/keys | wc -c); \
         echo secret=$(ls -A /secret | wc -l); echo firmware=$(ls -A /sys/firmware | wc -l); \
         touch /secret/x 2>/dev/null && echo secret-writable; echo end",
        |c| {
            c["linux"]["maskedPaths"]
                .as_array_mut()
                .unwrap()
                .push(json!("/secret"));
        },
    );
    fs::create_dir(c.rootfs().join("secret")).unwrap();
    fs::write(c.rootfs().join("secret/data"), "top secret\n").unwrap();
    let o = c.run().ok();
    assert_eq!(
        o.lines(),
        ["kcore=0", "keys=0", "secret=0", "firmware=0", "end"],
        "{o}"
    );
    // The rootfs itself is untouched.
    assert_eq!(read_trim(c.rootfs().join("secret/data")), "top secret");
}

#[test]
fn mounts_readonly_paths() {
    need_root!();
    let c = Ctr::sh(
        "ro-paths",
        "cat /proc/self/mountinfo; echo ---; (echo 1 > /proc/sys/kernel/ns_last_pid) 2>&1; \
         (echo x > /data/f) 2>&1; cat /data/keep",
        |c| {
            c["linux"]["readonlyPaths"]
                .as_array_mut()
                .unwrap()
                .push(json!("/data"));
            c["process"]["capabilities"] = json!({
                "bounding": ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"],
                "permitted": ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"],
                "effective": ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"]
            });
        },
    );
    fs::create_dir(c.rootfs().join("data")).unwrap();
    fs::write(c.rootfs().join("data/keep"), "kept\n").unwrap();
    let o = c.run().ok();
    let table = o.stdout.split("\n---\n").next().unwrap();
    let m = parse_mountinfo(table);
    for p in [
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/irq",
        "/proc/bus",
        "/data",
    ] {
        if p.starts_with("/proc/") && !Path::new(p).exists() {
            continue; // not on this kernel
        }
        let e = mount_at(&m, p).unwrap_or_else(|| panic!("{p} is not a mount: {o}"));
        assert!(e.has_opt("ro"), "{p} not ro: {e:?}");
    }
    let lines = after_marker(&o);
    assert!(
        lines[0].contains("Read-only file system"),
        "/proc/sys writable: {o}"
    );
    assert!(
        lines[1].contains("Read-only file system"),
        "/data writable: {o}"
    );
    assert_eq!(lines[2], "kept", "{o}");
}

#[test]
fn mounts_default_devices() {
    need_root!();
    let o = run_sh(
        "default-devs",
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T' /dev/$d; done; \
         for l in fd stdin stdout stderr; do echo /dev/$l=$(readlink /dev/$l); done; \
         [ -d /dev/pts ] && echo pts-dir; [ -d /dev/shm ] && echo shm-dir; \
         [ -c /dev/ptmx ] || [ -L /dev/ptmx ] && echo ptmx-ok; \
         echo x > /dev/null && echo null-write-ok; \
         echo zero=$(head -c 5 /dev/zero | wc -c); echo urandom=$(head -c 9 /dev/urandom | wc -c); \
         echo x 2>/dev/null > /dev/full || echo full-is-full",
        |_| {},
    )
    .ok();
    assert_eq!(
        o.lines(),
        [
            "/dev/null character special file 1:3",
            "/dev/zero character special file 1:5",
            "/dev/full character special file 1:7",
            "/dev/random character special file 1:8",
            "/dev/urandom character special file 1:9",
            "/dev/tty character special file 5:0",
            "/dev/fd=/proc/self/fd",
            "/dev/stdin=/proc/self/fd/0",
            "/dev/stdout=/proc/self/fd/1",
            "/dev/stderr=/proc/self/fd/2",
            "pts-dir",
            "shm-dir",
            "ptmx-ok",
            "null-write-ok",
            "zero=5",
            "urandom=9",
            "full-is-full",
        ],
        "{o}"
    );
}

#[test]
fn mounts_linux_devices_are_created() {
    need_root!();
    let o = run_sh(
        "devices",
        "stat -c '%n %F %t:%T %a %u:%g' /dev/mynull /dev/myfifo; echo x > /dev/mynull && echo ok",
        |c| {
            c["linux"]["devices"] = json!([
                {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                 "fileMode": 0o640, "uid": 1000, "gid": 5},
                {"path": "/dev/myfifo", "type": "p", "fileMode": 0o600, "uid": 0, "gid": 0}
            ]);
        },
    )
    .ok();
    assert_eq!(
        o.lines(),
        [
            "/dev/mynull character special file 1:3 640 1000:5",
            "/dev/myfifo fifo 0:0 600 0:0",
            "ok"
        ],
        "{o}"
    );
}

fn root_propagation(tag: &str, mode: &str) -> MountInfo {
    let (m, o) = inner_mounts(tag, "true", |c| {
        c["linux"]["rootfsPropagation"] = json!(mode);
    });
    mount_at(&m, "/")
        .unwrap_or_else(|| panic!("no / mount: {o}"))
        .clone()
}

#[test]
fn mounts_rootfs_propagation_private() {
    need_root!();
    let private = root_propagation("prop-private", "private");
    assert!(
        !private.optional.contains("shared:") && !private.optional.contains("master:"),
        "rootfsPropagation private: {private:?}"
    );
}

#[test]
fn mounts_rootfs_propagation_shared() {
    need_root!();
    // runc 1.1 makes the rootfs's parent mount private for pivot_root, so its root stays
    // private whatever rootfsPropagation says; berth applies it after pivot_root.
    berth_only!("runc 1.1 ignores rootfsPropagation=shared when the host's / is private");
    let shared = root_propagation("prop-shared", "shared");
    assert!(
        shared.optional.contains("shared:"),
        "rootfsPropagation shared: {shared:?}"
    );
}

#[test]
fn mounts_no_pivot() {
    need_root!();
    let c = Ctr::sh(
        "no-pivot",
        "ls /bin/busybox; cat /etc/passwd | head -1; ls /",
        |_| {},
    );
    let o = c.run_with(&["--no-pivot"]).ok();
    let lines = o.lines();
    assert_eq!(lines[0], "/bin/busybox", "{o}");
    assert_eq!(lines[1], "root:x:0:0:root:/root:/bin/sh", "{o}");
    assert!(
        lines.contains(&"bin".to_string()) && !lines.contains(&"work".to_string()),
        "{o}"
    );
}

#[test]
fn mounts_symlink_destination_stays_in_rootfs() {
    need_root!();
    // Mount destinations that are symlinks pointing out of the rootfs (absolute and
    // relative) must resolve inside the rootfs: nothing may be created or mounted at
    // the host path.
    let mut c = Ctr::sh("symlink-dest", "true", |_| {});
    let abs_target = c.host_dir().join("escape-abs");
    let rel_target = c.host_dir().join("escape-rel");
    std::os::unix::fs::symlink(&abs_target, c.rootfs().join("evil-abs")).unwrap();
    std::os::unix::fs::symlink(
        format!("../../../../../../../../..{}", rel_target.display()),
        c.rootfs().join("evil-rel"),
    )
    .unwrap();
    c.tweak(|cfg| {
        add_mount(
            cfg,
            json!({"destination": "/evil-abs", "type": "tmpfs", "source": "tmpfs"}),
        );
        add_mount(
            cfg,
            json!({"destination": "/evil-rel/sub", "type": "tmpfs", "source": "tmpfs"}),
        );
    });
    let o = c.run();
    let _ = c.rt(&["delete", "--force", &c.id]);
    assert!(
        !abs_target.exists(),
        "host path {} created: {o}",
        abs_target.display()
    );
    assert!(
        !rel_target.exists(),
        "host path {} created: {o}",
        rel_target.display()
    );
    let host = host_mountinfo();
    for t in [&abs_target, &rel_target] {
        assert!(
            !host
                .iter()
                .any(|m| Path::new(&m.mount_point).starts_with(t)),
            "mount on the host at {}",
            t.display()
        );
    }
    let leaked = c.host_mounts();
    assert!(leaked.is_empty(), "mounts on the host: {leaked:?}");
}

#[test]
fn mounts_bind_source_symlink_in_destination_path() {
    need_root!();
    // A symlink component in the middle of a destination also resolves in the rootfs.
    let mut c = Ctr::sh("symlink-mid", "cat /etc/link/inner/f", |_| {});
    let target = c.host_dir().join("outside");
    std::os::unix::fs::symlink(&target, c.rootfs().join("etc/link")).unwrap();
    let src = c.host_dir().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "bound\n").unwrap();
    c.tweak(|cfg| {
        add_mount(
            cfg,
            json!({"destination": "/etc/link/inner", "type": "bind",
        "source": src, "options": ["bind"]}),
        );
    });
    let o = c.run();
    assert!(
        !target.exists(),
        "host path {} created: {o}",
        target.display()
    );
    if o.success() {
        assert_eq!(o.out(), "bound", "{o}");
        // It landed inside the rootfs.
        assert!(c
            .rootfs()
            .join(target.strip_prefix("/").unwrap())
            .join("inner")
            .is_dir());
    }
}
