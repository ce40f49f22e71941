//! podman driving the runtime (through conmon), as a real client would: `podman
//! --runtime <runtime>` with a private store (--root/--runroot/--tmpdir under a temp dir)
//! and a private containers.conf (CONTAINERS_CONF), so the host's podman setup is neither
//! used nor changed. podman calls the runtime as
//! `--log-format=json --log F create --bundle B --pid-file P ID`, `start ID`,
//! `exec --pid-file P --process F --detach ID`, `kill ID 15`, `delete --force ID`.

use crate::harness::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let bin = Command::new("podman").arg("--version").output();
        assert!(
            bin.map(|o| o.status.success()).unwrap_or(false),
            "podman is not installed (apt-get install podman)"
        );
        let dir = tempfile::Builder::new()
            .prefix("bt-podman.")
            .tempdir()
            .unwrap();
        for d in ["root", "runroot", "tmp", "io"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        make_rootfs(&dir.path().join("rootfs"));
        // The host's containers.conf may ask for ulimits this sandbox cannot grant.
        fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n",
        )
        .unwrap();
        Podman { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn rootfs(&self) -> PathBuf {
        self.path("rootfs")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.path("containers.conf"))
            .arg("--runtime")
            .arg(runtime_bin())
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("runroot"))
            .arg("--tmpdir")
            .arg(self.path("tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args);
        cmd
    }

    #[track_caller]
    fn run(&self, args: &[&str]) -> Out {
        run_cmd(self.cmd(args), &self.path("io"), None, TIMEOUT)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let mut cmd = self.cmd(&["rm", "--all", "--force", "--time", "0"]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let _ = cmd.status();
        // podman mounts a tmpfs per container for /dev/shm under its root: detach any left.
        let base = self.dir.path().to_string_lossy().into_owned();
        let mut left: Vec<String> = host_mountinfo()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|m| Path::new(m).starts_with(&base))
            .collect();
        left.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in left {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        // podman leaves its empty cgroups (libpod_parent/conmon) behind;
        // another test still using them keeps them (rmdir fails).
        if let Ok(dirs) = fs::read_dir("/sys/fs/cgroup") {
            for c in dirs.flatten() {
                let parent = c.path().join("libpod_parent");
                let _ = fs::remove_dir(parent.join("conmon"));
                let _ = fs::remove_dir(&parent);
            }
        }
    }
}

#[test]
fn podman_run_output_and_exit_code() {
    need_root!();
    let p = Podman::new();
    let rootfs = p.rootfs();
    let o = p.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "echo hi; exit 7",
    ]);
    assert_eq!(o.code(), 7, "{o}");
    assert_eq!(o.out(), "hi", "{o}");
    let ps = p.run(&["ps", "--all", "--quiet"]).ok();
    assert_eq!(ps.out(), "", "container left after --rm: {ps}");
}

#[test]
fn podman_run_with_user_env_workdir() {
    need_root!();
    let p = Podman::new();
    let rootfs = p.rootfs();
    let o = p
        .run(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "1000:1000",
            "--env",
            "FOO=bar",
            "--workdir",
            "/tmp",
            "--hostname",
            "podhost",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "echo $FOO; pwd; id -u; id -g; hostname",
        ])
        .ok();
    assert_eq!(o.lines(), ["bar", "/tmp", "1000", "1000", "podhost"], "{o}");
}

#[test]
fn podman_detached_exec_and_remove() {
    need_root!();
    let p = Podman::new();
    let rootfs = p.rootfs();
    let name = unique_id("pod");
    p.run(&[
        "run",
        "--detach",
        "--network",
        "none",
        "--name",
        &name,
        "--rootfs",
        rootfs.to_str().unwrap(),
        "/bin/sleep",
        "1000",
    ])
    .ok();
    let o = p.run(&[
        "exec",
        &name,
        "/bin/sh",
        "-c",
        "echo in-exec; cat /proc/1/cmdline | tr '\\0' ' '; exit 4",
    ]);
    assert_eq!(o.code(), 4, "{o}");
    assert_eq!(o.lines(), ["in-exec", "/bin/sleep 1000 "], "{o}");
    let insp = p
        .run(&["inspect", "--format", "{{.State.Status}}", &name])
        .ok();
    assert_eq!(insp.out(), "running", "{insp}");
    p.run(&["rm", "--force", "--time", "0", &name]).ok();
    let ps = p.run(&["ps", "--all", "--quiet"]).ok();
    assert_eq!(ps.out(), "", "{ps}");
}
