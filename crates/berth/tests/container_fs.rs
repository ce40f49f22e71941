//! A container's file system through the `berth` binary: `diff`, `export`,
//! `commit` and `cp` (with the symlink-swap attacks of CVE-2018-15664).
//!
//! Each test has its own --root and --run-root and the busybox image (made
//! from Debian's busybox-static once, as in tests/containers.rs). Root is
//! required: without it these tests fail (BERTH_SKIP_ROOT_TESTS=1 skips
//! them). Containers, mounts and cgroups go when a test's store is dropped,
//! also when the test fails.

mod common;

use common::{need_root, text, Store};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What these tests add to the shared store.
impl Store {
    /// Run with `input` on stdin; the output.
    fn with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
        let o = child.wait_with_output().unwrap();
        writer.join().unwrap();
        o
    }

    /// A container's full ID.
    fn id(&self, name: &str) -> String {
        self.ok(&["inspect", "-f", "{{.Id}}", name])
            .trim()
            .to_string()
    }

    /// Nothing of ours is mounted any more, and no temporary mount point
    /// is left in the container's directory.
    fn assert_no_leftovers(&self, name: &str) {
        let dir = self.root().join("containers").join(self.id(name));
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let running = self.ok(&["inspect", "-f", "{{.State.Running}}", name]);
        let merged = self.ok(&["inspect", "-f", "{{.GraphDriver.Data.MergedDir}}", name]);
        for l in mounts.lines() {
            let mp = l.split_whitespace().nth(4).unwrap_or("");
            if mp == merged.trim() {
                assert_eq!(running.trim(), "true", "left mounted: {l}");
                continue;
            }
            assert!(!mp.starts_with(dir.to_str().unwrap()), "left mounted: {l}");
        }
        for e in std::fs::read_dir(&dir).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !n.starts_with("export-") && !n.starts_with("cp-"),
                "left behind: {n}"
            );
        }
    }

    /// Wait until `cmd` succeeds in the running container.
    fn wait_exec(&self, name: &str, cmd: &[&str]) {
        let start = Instant::now();
        loop {
            let mut args = vec!["exec", name];
            args.extend_from_slice(cmd);
            if self.run(&args).status.success() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{cmd:?} never succeeded"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `tar -tv` of an archive, one line per entry.
fn tar_listing(archive: &Path) -> Vec<String> {
    let o = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout).lines().map(str::to_string).collect()
}

/// The listing line of `name` (`tar -tv` ends it with the name, or with
/// `name -> target` / `name link to first`).
fn entry<'a>(listing: &'a [String], name: &str) -> Option<&'a String> {
    listing.iter().find(|l| {
        let after = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
        after == name
            || after.starts_with(&format!("{name} -> "))
            || after.starts_with(&format!("{name} link to "))
    })
}

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("berth-{tag}-{}-{n}", std::process::id())
}

#[test]
fn diff_lists_added_changed_and_deleted_paths() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&[
        "run",
        "--name",
        "dbox",
        "busybox",
        "sh",
        "-c",
        "echo hi > /tmp/x; rm /etc/group; mkdir -p /new/dir; echo more >> /etc/passwd; \
         rm -rf /home; mkdir /home; touch /home/f; ln -s /etc /tmp/l",
    ]);
    let want = "C /etc\nD /etc/group\nC /etc/passwd\nC /home\nA /home/f\nD /home/user\n\
                A /new\nA /new/dir\nC /tmp\nA /tmp/l\nA /tmp/x\n";
    assert_eq!(s.ok(&["diff", "dbox"]), want);
    assert_eq!(s.ok(&["container", "diff", "dbox"]), want);

    // A container that changed nothing: nothing (the runtime's mount
    // points are no change).
    s.ok(&["run", "--name", "quiet", "busybox", "true"]);
    assert_eq!(s.ok(&["diff", "quiet"]), "");
    // Created, never started.
    s.ok(&["create", "--name", "new", "busybox", "true"]);
    assert_eq!(s.ok(&["diff", "new"]), "");

    // A running one.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "busybox",
        "sh",
        "-c",
        "echo x > /root/r; exec sleep 1000",
    ]);
    s.wait_exec("live", &["test", "-e", "/root/r"]);
    assert_eq!(s.ok(&["diff", "live"]), "C /root\nA /root/r\n");

    let err = s.fails(&["diff", "nosuch"]);
    assert_eq!(
        err,
        "Error response from daemon: No such container: nosuch\n"
    );
}

#[test]
fn export_writes_the_whole_file_system() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&[
        "run",
        "--name",
        "ebox",
        "busybox",
        "sh",
        "-c",
        "echo hi > /tmp/x; chown 1000:1000 /tmp/x; chmod 4755 /tmp/x; ln /tmp/x /tmp/y; \
         mkfifo /tmp/p; rm /etc/group",
    ]);
    let dir = tempfile::tempdir().unwrap();
    // To stdout.
    let piped = dir.path().join("piped.tar");
    let o = s
        .cmd(&["export", "ebox"])
        .stdout(std::fs::File::create(&piped).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let l = tar_listing(&piped);
    let line = |n: &str| {
        entry(&l, n)
            .unwrap_or_else(|| panic!("{n} is not in the export: {l:#?}"))
            .clone()
    };
    assert!(line("bin/sh").starts_with('l') && line("bin/sh").ends_with("bin/sh -> busybox"));
    assert!(line("bin/").starts_with('d'));
    let x = line("tmp/x");
    assert!(x.starts_with("-rwsr-xr-x 1000/1000"), "{x}");
    assert!(line("tmp/y").ends_with("tmp/y link to tmp/x"), "{l:?}");
    assert!(line("tmp/p").starts_with('p'));
    assert!(entry(&l, "etc/passwd").is_some());
    assert!(entry(&l, "etc/group").is_none(), "deleted in the container");
    assert!(
        !l.iter().any(|e| e.ends_with(" ./") || e.ends_with(" /")),
        "the root is no entry: {l:?}"
    );
    // To a file: the same bytes.
    let file = dir.path().join("out.tar");
    s.ok(&["export", "-o", file.to_str().unwrap(), "ebox"]);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&piped).unwrap()
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("tmp")),
        "no temp file is left"
    );
    s.assert_no_leftovers("ebox");
    // What was exported runs.
    s.ok(&["import", file.to_str().unwrap(), "exported:1"]);
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "exported:1",
            "sh",
            "-c",
            "cat /tmp/x; ls /etc"
        ]),
        "hi\nhostname\nhosts\npasswd\nresolv.conf\n"
    );

    // A running container: its live file system.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "busybox",
        "sh",
        "-c",
        "echo now > /now; exec sleep 1000",
    ]);
    s.wait_exec("live", &["test", "-e", "/now"]);
    let live = dir.path().join("live.tar");
    s.ok(&[
        "container",
        "export",
        "--output",
        live.to_str().unwrap(),
        "live",
    ]);
    assert!(entry(&tar_listing(&live), "now").is_some());
    s.assert_no_leftovers("live");

    // Errors.
    let err = s.fails(&["export", "-o", "/nonexistent-berth-dir/x.tar", "ebox"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = s.fails(&["export", "-o", live.to_str().unwrap(), "nosuch"]);
    assert_eq!(
        err,
        "Error response from daemon: No such container: nosuch\n"
    );
    // Never to a terminal.
    let o = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} --root {} --run-root {} export e",
            env!("CARGO_BIN_EXE_berth"),
            s.root().display(),
            s.run.display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        text(&o.stdout)
            .contains("cowardly refusing to save to a terminal. Use the -o flag or redirect"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn commit_makes_an_image_that_runs() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&[
        "run",
        "--name",
        "box",
        "-e",
        "FOO=bar",
        "busybox",
        "sh",
        "-c",
        "echo committed > /data.txt; rm /etc/group",
    ]);
    let id = s.ok(&[
        "commit",
        "-a",
        "Ann <ann@example.com>",
        "-m",
        "a message",
        "-c",
        "CMD [\"cat\", \"/data.txt\"]",
        "box",
        "mine/app:v1",
    ]);
    let id = id.trim();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "prints the image ID: {id}"
    );
    assert_eq!(s.ok(&["run", "--rm", "mine/app:v1"]), "committed\n");
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "mine/app:v1",
            "sh",
            "-c",
            "test -e /etc/group && echo present || echo gone; echo $FOO; cat /etc/passwd | wc -l"
        ]),
        "gone\nbar\n3\n"
    );
    assert_eq!(
        s.ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Id}} {{.Author}} {{len .RootFS.Layers}}",
            "mine/app:v1"
        ]),
        format!("{id} Ann <ann@example.com> 2\n")
    );
    let h = s.ok(&["history", "--no-trunc", "mine/app:v1"]);
    assert!(h.contains("a message"), "{h}");
    assert!(h.contains("sh -c echo committed"), "{h}");

    // A running container is paused while read, and runs on after.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "busybox",
        "sh",
        "-c",
        "echo live > /live; exec sleep 1000",
    ]);
    s.wait_exec("live", &["test", "-e", "/live"]);
    s.ok(&["container", "commit", "live", "live:1"]);
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.State.Status}}", "live"]),
        "running\n"
    );
    s.ok(&["commit", "--pause=false", "live", "live:2"]);
    assert_eq!(s.ok(&["run", "--rm", "live:2", "cat", "/live"]), "live\n");
    // Commit of a commit.
    s.ok(&[
        "run",
        "--name",
        "c2",
        "mine/app:v1",
        "sh",
        "-c",
        "echo two > /two",
    ]);
    s.ok(&["commit", "c2", "mine/app:v2"]);
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "mine/app:v2",
            "sh",
            "-c",
            "cat /data.txt /two"
        ]),
        "committed\ntwo\n"
    );

    // No changes: no new layer.
    s.ok(&["run", "--name", "same", "busybox", "true"]);
    s.ok(&["commit", "same", "same:1"]);
    assert_eq!(
        s.ok(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", "same:1"]),
        "1\n"
    );

    // Errors: before anything is done.
    let err = s.fails(&["commit", "-c", "FROM x", "box"]);
    assert!(err.contains("FROM is not a valid change command"), "{err}");
    let err = s.fails(&["commit", "nosuch"]);
    assert_eq!(
        err,
        "Error response from daemon: No such container: nosuch\n"
    );
    let err = s.fails(&["commit", "box", "Bad/Name"]);
    assert!(err.contains("Bad/Name"), "{err}");
}

#[test]
fn cp_out_of_a_container() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&[
        "run",
        "--name",
        "box",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /d/sub; echo a > /d/a; echo b > /d/sub/b; ln -s a /d/link; echo f > /f; chmod 640 /f",
    ]);
    let h = tempfile::tempdir().unwrap();
    let p = |n: &str| h.path().join(n);
    let ps = |n: &str| p(n).to_str().unwrap().to_string();
    // A file to a new name, and into a directory.
    s.ok(&["cp", "box:/f", &ps("newname")]);
    assert_eq!(std::fs::read_to_string(p("newname")).unwrap(), "f\n");
    assert_eq!(
        std::fs::metadata(p("newname"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o640
    );
    s.ok(&[
        "container",
        "cp",
        "box:f",
        &format!("{}/", h.path().display()),
    ]);
    assert_eq!(std::fs::read_to_string(p("f")).unwrap(), "f\n");
    // Over an existing file.
    std::fs::write(p("over"), "old content").unwrap();
    s.ok(&["cp", "box:/d/a", &ps("over")]);
    assert_eq!(std::fs::read_to_string(p("over")).unwrap(), "a\n");
    // A directory to a new name: the new directory has its contents.
    s.ok(&["cp", "box:/d", &ps("d1")]);
    assert_eq!(std::fs::read_to_string(p("d1/a")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(p("d1/sub/b")).unwrap(), "b\n");
    assert_eq!(std::fs::read_link(p("d1/link")).unwrap(), Path::new("a"));
    // Into an existing directory: the directory itself …
    std::fs::create_dir(p("into")).unwrap();
    s.ok(&["cp", "box:/d", &ps("into")]);
    assert_eq!(std::fs::read_to_string(p("into/d/sub/b")).unwrap(), "b\n");
    // … or with /. its contents.
    std::fs::create_dir(p("contents")).unwrap();
    s.ok(&["cp", "box:/d/.", &ps("contents")]);
    assert_eq!(std::fs::read_to_string(p("contents/sub/b")).unwrap(), "b\n");
    assert!(!p("contents/d").exists());
    // -L copies what a symlink points to.
    s.ok(&["cp", "-L", "box:/d/link", &ps("followed")]);
    assert!(std::fs::symlink_metadata(p("followed")).unwrap().is_file());
    assert_eq!(std::fs::read_to_string(p("followed")).unwrap(), "a\n");
    s.ok(&["cp", "box:/d/link", &ps("notfollowed")]);
    assert!(std::fs::symlink_metadata(p("notfollowed"))
        .unwrap()
        .file_type()
        .is_symlink());
    // As a tar on stdout.
    let o = s.run(&["cp", "box:/d", "-"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    std::fs::write(p("d.tar"), &o.stdout).unwrap();
    let names: Vec<String> = tar_listing(&p("d.tar"))
        .iter()
        .map(|l| l.split_whitespace().nth(5).unwrap().to_string())
        .collect();
    assert_eq!(names, ["d/", "d/a", "d/link", "d/sub/", "d/sub/b"]);

    // Errors, as Docker words them.
    assert_eq!(
        s.fails(&["cp", "box:/nope", &ps("x")]),
        "Error response from daemon: Could not find the file /nope in container box\n"
    );
    let err = s.fails(&["cp", "box:/f", &format!("{}/", ps("nodir"))]);
    assert_eq!(err, "no such directory\n");
    let err = s.fails(&["cp", "box:/f", "/nonexistent-berth-dir/x"]);
    assert_eq!(
        err,
        "invalid output path: directory \"/nonexistent-berth-dir\" does not exist\n"
    );
    let err = s.fails(&["cp", "box:/d", &ps("newname")]);
    assert_eq!(err, "cannot copy directory\n");
    let err = s.fails(&["cp", "nosuch:/f", &ps("x")]);
    assert_eq!(
        err,
        "Error response from daemon: No such container: nosuch\n"
    );
    let err = s.fails(&["cp", &ps("f"), &ps("g")]);
    assert_eq!(err, "must specify at least one container source\n");
    let err = s.fails(&["cp", "box:/f", "box:/g"]);
    assert_eq!(err, "copying between containers is not supported\n");
    s.assert_no_leftovers("box");
}

#[test]
fn cp_into_a_container() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    let h = tempfile::tempdir().unwrap();
    let src = h.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("x"), "x content\n").unwrap();
    std::fs::write(src.join("sub/y"), "y content\n").unwrap();
    std::os::unix::fs::chown(src.join("x"), Some(1234), Some(1234)).unwrap();
    std::fs::set_permissions(src.join("x"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let srcs = |n: &str| src.join(n).to_str().unwrap().to_string();
    // A container that was never started: copies go into its layer.
    s.ok(&[
        "create",
        "--name",
        "box",
        "busybox",
        "sh",
        "-c",
        "cat /tmp/x /tmp/newname /newdir/x /newdir/sub/y /root/x /root/sub/y /root/t.txt; \
         stat -c '%u:%g %a' /tmp/x /tmp/archived",
    ]);
    s.ok(&["cp", &srcs("x"), "box:/tmp/"]);
    s.ok(&["cp", &srcs("x"), "box:/tmp/newname"]);
    s.ok(&["container", "cp", src.to_str().unwrap(), "box:/newdir"]);
    s.ok(&["cp", &format!("{}/.", src.display()), "box:/root"]);
    s.ok(&["cp", "-a", &srcs("x"), "box:/tmp/archived"]);
    // A tar on stdin, extracted where it is told.
    let tardir = h.path().join("tardir");
    std::fs::create_dir(&tardir).unwrap();
    std::fs::write(tardir.join("t.txt"), "from tar\n").unwrap();
    let tarball = Command::new("tar")
        .args(["-cf", "-", "-C"])
        .arg(&tardir)
        .arg("t.txt")
        .output()
        .unwrap()
        .stdout;
    let o = s.with_stdin(&["cp", "-", "box:/root"], &tarball);
    assert!(o.status.success(), "{}", text(&o.stderr));
    s.assert_no_leftovers("box");
    let out = s.ok(&["start", "-a", "box"]);
    assert_eq!(
        out,
        "x content\nx content\nx content\ny content\nx content\ny content\nfrom tar\n0:0 640\n1234:1234 640\n"
    );
    // A running container: through its own mount.
    s.ok(&["run", "-d", "--name", "live", "busybox", "sleep", "1000"]);
    s.ok(&["cp", &srcs("sub"), "live:/tmp"]);
    assert_eq!(s.ok(&["exec", "live", "cat", "/tmp/sub/y"]), "y content\n");
    s.assert_no_leftovers("live");

    // Errors.
    assert_eq!(
        s.fails(&["cp", &srcs("x"), "box:/nope/x"]),
        "Error response from daemon: Could not find the file /nope in container box\n"
    );
    let o = s.with_stdin(&["cp", "-", "box:/etc/passwd"], &tarball);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "destination \"box:/etc/passwd\" must be a directory\n"
    );
    let err = s.fails(&["cp", &srcs("nope"), "box:/tmp"]);
    assert_eq!(
        err,
        format!("lstat {}: no such file or directory\n", srcs("nope"))
    );
    let err = s.fails(&["cp", src.to_str().unwrap(), "box:/etc/passwd"]);
    assert_eq!(err, "cannot copy directory\n");
    // A file where the container has a directory is refused.
    std::fs::write(h.path().join("tmp"), "not a dir").unwrap();
    let err = s.fails(&["cp", h.path().join("tmp").to_str().unwrap(), "box:/"]);
    assert!(
        err.starts_with("Error response from daemon: cannot overwrite directory \"/tmp\""),
        "{err}"
    );
    // A read-only root file system takes nothing.
    s.ok(&["create", "--name", "ro", "--read-only", "busybox", "true"]);
    assert_eq!(
        s.fails(&["cp", &srcs("x"), "ro:/tmp"]),
        "Error response from daemon: container rootfs is marked read-only\n"
    );
}

/// `cp` sees the container's binds and volumes where the container sees
/// them, read-only ones read-only.
#[test]
fn cp_goes_through_volumes_and_binds() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    let h = tempfile::tempdir().unwrap();
    let (bind, robind) = (h.path().join("bind"), h.path().join("robind"));
    std::fs::create_dir(&bind).unwrap();
    std::fs::create_dir(&robind).unwrap();
    std::fs::write(bind.join("on-host"), "host side\n").unwrap();
    let file = h.path().join("file");
    std::fs::write(&file, "copied\n").unwrap();
    let f = file.to_str().unwrap();
    let v = |host: &Path, dest: &str| format!("{}:{dest}", host.display());
    for (name, running) in [("stopped", false), ("running", true)] {
        let vol = format!("vol-{name}");
        let mut args = vec![
            "run".to_string(),
            "--name".into(),
            name.into(),
            "--read-only".into(),
            "-v".into(),
            format!("{vol}:/data"),
            "-v".into(),
            v(&bind, "/bind"),
            "-v".into(),
            v(&robind, "/robind:ro"),
        ];
        if running {
            args.push("-d".into());
        }
        args.extend(["busybox".into(), "sh".into(), "-c".into()]);
        args.push(if running {
            "exec sleep 1000".into()
        } else {
            "true".into()
        });
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.ok(&args);
        // Out of a bind: the host's file.
        let out = h.path().join(format!("out-{name}"));
        s.ok(&[
            "cp",
            &format!("{name}:/bind/on-host"),
            out.to_str().unwrap(),
        ]);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "host side\n");
        // Into a bind and a volume (the root file system is read-only).
        s.ok(&["cp", f, &format!("{name}:/bind/from-{name}")]);
        assert_eq!(
            std::fs::read_to_string(bind.join(format!("from-{name}"))).unwrap(),
            "copied\n"
        );
        s.ok(&["cp", f, &format!("{name}:/data/")]);
        assert_eq!(
            s.ok(&[
                "run",
                "--rm",
                "-v",
                &format!("{vol}:/v"),
                "busybox",
                "cat",
                "/v/file"
            ]),
            "copied\n"
        );
        assert_eq!(
            s.fails(&["cp", f, &format!("{name}:/robind/")]),
            "Error response from daemon: mounted volume is marked read-only\n"
        );
        assert_eq!(
            s.fails(&["cp", f, &format!("{name}:/tmp/")]),
            "Error response from daemon: container rootfs is marked read-only\n"
        );
        assert!(std::fs::read_dir(&robind).unwrap().next().is_none());
        s.assert_no_leftovers(name);
    }
    // The host's mounts are as they were: nothing of the copies stayed.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(h.path().to_str().unwrap()), "{mounts}");
}

/// CVE-2018-15664: paths in the container resolve inside it, whatever
/// symlinks the container put (or keeps swapping) on the way.
#[test]
fn cp_never_follows_a_container_symlink_out_of_it() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    let h = tempfile::tempdir().unwrap();
    let mine = h.path().join("mine");
    std::fs::write(&mine, "from the host\n").unwrap();
    let name = unique("cp");
    let setup = format!(
        "echo container-secret >> /etc/passwd; ln -s /etc /danger; ln -s / /rootlink; \
         ln -s ../../../../../../../etc /climb; ln -s /etc/{name}-dangling /tmp/evil"
    );
    // Stopped (a mount of its layers) and running (its live mount).
    s.ok(&["run", "--name", "stopped", "busybox", "sh", "-c", &setup]);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "running",
        "busybox",
        "sh",
        "-c",
        &format!("{setup}; exec sleep 1000"),
    ]);
    s.wait_exec("running", &["test", "-L", "/tmp/evil"]);
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(!host_passwd.contains("container-secret"));
    for c in ["stopped", "running"] {
        for (i, src) in ["/danger/passwd", "/rootlink/etc/passwd", "/climb/passwd"]
            .iter()
            .enumerate()
        {
            let out = h.path().join(format!("{c}-{i}"));
            s.ok(&["cp", &format!("{c}:{src}"), out.to_str().unwrap()]);
            let got = std::fs::read_to_string(&out).unwrap();
            assert!(got.contains("container-secret"), "{c}:{src} read {got:?}");
            assert_ne!(got, host_passwd);
        }
        // Writes through the same symlinks land in the container.
        for dest in [
            format!("{c}:/danger/{name}"),
            format!("{c}:/rootlink/etc/{name}-2"),
            format!("{c}:/climb/{name}-3"),
            format!("{c}:/tmp/evil"),
        ] {
            s.ok(&["cp", mine.to_str().unwrap(), &dest]);
        }
        for n in [
            name.clone(),
            format!("{name}-2"),
            format!("{name}-3"),
            format!("{name}-dangling"),
        ] {
            assert!(
                !Path::new("/etc").join(&n).exists(),
                "{c}: /etc/{n} was written on the host"
            );
            let back = h.path().join(format!("back-{c}-{n}"));
            s.ok(&["cp", &format!("{c}:/etc/{n}"), back.to_str().unwrap()]);
            assert_eq!(std::fs::read_to_string(&back).unwrap(), "from the host\n");
        }
        // -L too resolves inside.
        let out = h.path().join(format!("{c}-L"));
        s.ok(&["cp", "-L", &format!("{c}:/danger"), out.to_str().unwrap()]);
        assert!(std::fs::read_to_string(out.join("passwd"))
            .unwrap()
            .contains("container-secret"));
        s.assert_no_leftovers(c);
    }

    // The race itself: the container keeps swapping a directory and a
    // symlink to / while we copy through it. Whatever we read is the
    // container's; the host's file is never what comes out.
    let secret = format!("/tmp/{}", unique("host-secret"));
    std::fs::write(&secret, "HOST SECRET\n").unwrap();
    let _cleanup = Cleanup(PathBuf::from(&secret));
    s.ok(&[
        "run",
        "-d",
        "--name",
        "racer",
        "busybox",
        "sh",
        "-c",
        &format!(
            "mkdir -p /real{dir}; echo container > /real{secret}; \
             while :; do ln -sfn / /x; ln -sfn /real /x; done",
            dir = Path::new(&secret).parent().unwrap().display()
        ),
    ]);
    s.wait_exec("racer", &["test", "-e", &format!("/real{secret}")]);
    let mut seen = 0;
    for i in 0..40 {
        let out = h.path().join(format!("race-{i}"));
        let o = s.run(&["cp", &format!("racer:/x{secret}"), out.to_str().unwrap()]);
        if o.status.success() {
            let got = std::fs::read_to_string(&out).unwrap();
            assert_eq!(got, "container\n", "round {i}");
            seen += 1;
        }
        // (/x may be missing for a moment: "no such directory", as Docker.)
        let o = s.run(&["cp", mine.to_str().unwrap(), "racer:/x/tmp/"]);
        assert!(
            matches!(o.status.code(), Some(0) | Some(1)),
            "{}",
            text(&o.stderr)
        );
    }
    assert!(
        std::fs::read_to_string("/tmp/mine").map_or(true, |t| t != "from the host\n"),
        "a copy into the container landed in the host's /tmp"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "HOST SECRET\n");
    eprintln!("{seen} of 40 reads went through the swapped path");
}

/// Removes a host file when dropped.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn copies_and_exports_of_a_stopped_container_hold_off_its_start() {
    if !need_root() {
        return;
    }
    let s = Store::new().with_busybox();
    s.ok(&[
        "run",
        "--name",
        "box",
        "busybox",
        "sh",
        "-c",
        "test -e /big || dd if=/dev/zero of=/big bs=1M count=64 2>/dev/null",
    ]);
    // An export (slow: through a pipe we read slowly) and starts at once.
    let mut exp = s
        .cmd(&["export", "box"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = exp.stdout.take().unwrap();
    let mut first = vec![0u8; 4096];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    let mut starter = s
        .cmd(&["start", "-a", "box"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        starter.try_wait().unwrap().is_none(),
        "the start waits for the export's mount of the layers"
    );
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut rest).unwrap();
    assert!(exp.wait().unwrap().success());
    let o = starter.wait_with_output().unwrap();
    assert!(o.status.success(), "the start waited and then ran");
    assert!(first.len() + rest.len() > 64 << 20);
    // An export whose reader goes away leaves nothing mounted.
    let mut exp = s
        .cmd(&["export", "box"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = exp.stdout.take().unwrap();
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let st = exp.wait().unwrap();
    assert!(!st.success());
    s.assert_no_leftovers("box");
    // And a killed one neither (its mount namespace went with it).
    let mut exp = s
        .cmd(&["export", "box"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = exp.stdout.take().unwrap();
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    exp.kill().unwrap();
    exp.wait().unwrap();
    let dir = s.root().join("containers").join(s.id("box"));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(dir.to_str().unwrap()), "{mounts}");
    // Its empty mount point does not stop a removal.
    s.ok(&["rm", "box"]);
    assert!(!dir.exists());
}
