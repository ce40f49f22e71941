//! What the container test binaries share: root checks, a store of a
//! test's own (removed with its containers, volumes and the empty cgroup
//! parent when dropped, also when the test fails), and the busybox image
//! made from Debian's busybox-static once per build.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The stdout of `berth args`, which must have succeeded.
pub fn succeeded(args: &[&str], o: Output) -> String {
    assert!(
        o.status.success(),
        "berth {args:?} failed ({:?}): {}{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// The stderr of `berth args`, which must have exited with 1.
pub fn failed(args: &[&str], o: Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "berth {args:?}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stderr)
}

pub fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("BERTH_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: needs root");
        return false;
    }
    panic!("this test needs root (set BERTH_SKIP_ROOT_TESTS=1 to skip it)");
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A store of a test's own, removed (containers first) when dropped.
pub struct Store {
    pub dir: tempfile::TempDir,
    pub run: PathBuf,
    /// Environment variables every command of this store gets.
    pub env: Vec<(String, String)>,
}

impl Store {
    pub fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let run = PathBuf::from(format!(
            "/run/berth-test-{}",
            dir.path().file_name().unwrap().to_string_lossy()
        ));
        Store {
            dir,
            run,
            env: Vec::new(),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.arg("--root")
            .arg(self.root())
            .arg("--run-root")
            .arg(&self.run)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run berth")
    }

    /// Run and expect success; stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.run(args))
    }

    /// Run and expect exit 1; stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        failed(args, self.run(args))
    }

    /// The busybox image, as `busybox:latest`.
    pub fn with_busybox(self) -> Store {
        let tarball = busybox_tarball();
        self.ok(&["import", tarball.to_str().unwrap(), "busybox:latest"]);
        self
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Every container goes (monitors, mounts, cgroups), then the dirs.
        if let Ok(o) = self.cmd(&["ps", "-aq", "--no-trunc"]).output() {
            for id in text(&o.stdout).split_whitespace() {
                let _ = self.cmd(&["rm", "-f", id]).output();
            }
        }
        // Volumes (some are mounts of their own) go with the store.
        let _ = self.cmd(&["volume", "prune", "-a", "-f"]).output();
        // Networks: their bridges and the store's nftables table.
        let _ = self.cmd(&["network", "prune", "-f"]).output();
        // The run root is a tmpfs berth mounted (see ensure_run_root).
        let _ = nix::mount::umount2(&self.run, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.run);
        remove_empty_cgroup_parent();
    }
}

/// Remove berth's shared `/berth` cgroup parent (which berth keeps for the
/// next container) once it is empty: another test still using it keeps it,
/// as rmdir of a busy cgroup fails.
pub fn remove_empty_cgroup_parent() {
    if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
        for d in dirs.flatten() {
            let _ = std::fs::remove_dir(d.path().join("berth"));
        }
    }
    let _ = std::fs::remove_dir("/sys/fs/cgroup/berth");
}

/// Calls [`remove_empty_cgroup_parent`] when dropped, for a test that runs
/// containers without a [`Store`], also when it fails.
pub struct CgroupParentGuard;

impl Drop for CgroupParentGuard {
    fn drop(&mut self) {
        remove_empty_cgroup_parent();
    }
}

/// A rootfs tarball of Debian's busybox-static, made once per build.
pub fn busybox_tarball() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("busybox-rootfs.tar");
    if out.exists() {
        return out;
    }
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("rootfs");
    for d in [
        "bin",
        "etc",
        "tmp",
        "root",
        "proc",
        "sys",
        "dev",
        "home/user",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).expect("busybox-static is installed");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for app in text(&list.stdout).split_whitespace() {
        let p = r.join("bin").join(app);
        if !p.exists() {
            std::os::unix::fs::symlink("busybox", p).unwrap();
        }
    }
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/group"),
        "root:x:0:\ntty:x:5:\nusers:x:100:user\nuser:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    let staged = out.with_extension(format!("tmp{}", std::process::id()));
    assert!(Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&r)
        .arg("-cf")
        .arg(&staged)
        .arg(".")
        .status()
        .unwrap()
        .success());
    std::fs::rename(&staged, &out).unwrap();
    out
}
