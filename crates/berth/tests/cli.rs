//! The `berth` binary's own command line (the runtime's commands are tested
//! through `berth-runtime` in tests/runtime; here they are reached through
//! `berth runtime`).

use std::process::{Command, Output};

mod common;

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .output()
        .expect("run berth")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_and_version() {
    let o = berth(&["--help"]);
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("runtime"), "{}", text(&o.stdout));
    let o = berth(&["--version"]);
    assert!(o.status.success());
    assert!(
        text(&o.stdout).starts_with("berth version "),
        "{}",
        text(&o.stdout)
    );
    let o = berth(&["version"]);
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert!(
        out.starts_with("Client:\n Version:") && out.contains("\nServer:"),
        "{out}"
    );
    let o = berth(&[
        "version",
        "--format",
        "{{.Server.Version}} {{.Client.ApiVersion}}",
    ]);
    assert_eq!(
        text(&o.stdout),
        format!("{} 1.41\n", env!("CARGO_PKG_VERSION"))
    );
    let o = berth(&["runtime", "--help"]);
    assert!(o.status.success());
    let out = text(&o.stdout);
    for cmd in [
        "create", "start", "state", "kill", "delete", "run", "exec", "list", "ps", "pause",
        "resume", "features", "spec",
    ] {
        assert!(out.contains(cmd), "berth runtime --help lacks {cmd}: {out}");
    }
}

#[test]
fn unknown_command_is_a_docker_style_error() {
    let o = berth(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(125));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.contains("'frobnicate' is not a berth command"), "{err}");
}

#[test]
fn every_listed_command_is_reachable_first() {
    // `berth <command> --help` for each command `berth --help` lists, with
    // nothing before it (no global flag).
    let help = text(&berth(&["--help"]).stdout);
    let cmds: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(cmds.len() > 40, "{help}");
    for c in cmds {
        let o = berth(&[c, "--help"]);
        assert!(o.status.success(), "berth {c} --help: {}", text(&o.stderr));
    }
}

#[test]
fn runtime_through_berth() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let root = root.to_str().unwrap();
    // An empty state root lists nothing but the header.
    let o = berth(&["runtime", "--root", root, "list"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout).split_whitespace().collect::<Vec<_>>(),
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    );
    let o = berth(&["runtime", "--root", root, "list", "--format", "json"]);
    assert_eq!(text(&o.stdout).trim(), "[]");
    // features is JSON naming the hooks.
    let o = berth(&["runtime", "features"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hooks"].as_array().map(Vec::len), Some(6));
    // spec writes a config once, and refuses to overwrite it.
    let bundle = dir.path().to_str().unwrap();
    assert!(berth(&["runtime", "spec", "--bundle", bundle])
        .status
        .success());
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["process"]["args"][0], "sh");
    let o = berth(&["runtime", "spec", "--bundle", bundle]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("exists"), "{}", text(&o.stderr));
    // Errors are one line naming the object.
    let o = berth(&["runtime", "--root", root, "state", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr).trim(),
        "berth runtime: container \"nope\" does not exist"
    );
    let o = berth(&[
        "runtime",
        "--systemd-cgroup",
        "--root",
        root,
        "state",
        "nope",
    ]);
    assert!(
        text(&o.stderr).contains("--systemd-cgroup is not supported"),
        "{}",
        text(&o.stderr)
    );
}

/// podman on a private store under `d` (vfs, cgroupfs, file events, a
/// containers.conf that asks for no ulimits this host cannot grant), with
/// berth-runtime as its runtime.
fn podman(d: &std::path::Path, args: &[&str]) -> Output {
    let conf = d.join("containers.conf");
    if !conf.exists() {
        std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    }
    let out = Command::new("podman")
        .env("CONTAINERS_CONF", &conf)
        .arg("--runtime")
        .arg(env!("CARGO_BIN_EXE_berth-runtime"))
        .args(["--root", d.join("proot").to_str().unwrap()])
        .args(["--runroot", d.join("prun").to_str().unwrap()])
        .args(["--tmpdir", d.join("ptmp").to_str().unwrap()])
        .args(["--storage-driver", "vfs"])
        .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
        .args(args)
        .output()
        .expect("podman is installed by scripts/setup.sh");
    // podman leaves its (empty) cgroups behind: the host is left as found.
    if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in dirs.flatten() {
            let parent = c.path().join("libpod_parent");
            let _ = std::fs::remove_dir(parent.join("conmon"));
            let _ = std::fs::remove_dir(&parent);
        }
    }
    out
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Root tests fail when they cannot run, unless skipping is asked for.
fn need_root() -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("BERTH_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: needs root");
        return false;
    }
    panic!("this test needs root (set BERTH_SKIP_ROOT_TESTS=1 to skip it)");
}

#[test]
fn images_and_the_builtin_hello_world() {
    if !need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let root = root.to_str().unwrap();
    let o = berth(&["--root", root, "images"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout).split_whitespace().collect::<Vec<_>>(),
        ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    );
    // Asking for hello-world loads it from inside berth, no network.
    let o = berth(&["--root", root, "image", "inspect", "hello-world"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let img = &v[0];
    assert_eq!(img["RepoTags"], serde_json::json!(["hello-world:latest"]));
    assert_eq!(img["Config"]["Cmd"], serde_json::json!(["/hello"]));
    assert_eq!(img["RootFS"]["Layers"].as_array().map(Vec::len), Some(1));
    let id = img["Id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    // Listed, by short and full ID; the same through BERTH_ROOT.
    let o = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("images")
        .env("BERTH_ROOT", root)
        .output()
        .unwrap();
    let listing = text(&o.stdout);
    let row: Vec<&str> = listing
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..3],
        ["hello-world", "latest", &id[7..19]],
        "{listing}"
    );
    assert!(row.last().unwrap().ends_with("kB"), "{listing}");
    assert_eq!(
        text(&berth(&["--root", root, "images", "-q"]).stdout).trim(),
        &id[7..19]
    );
    assert_eq!(
        text(&berth(&["--root", root, "images", "-q", "--no-trunc"]).stdout).trim(),
        id
    );
    // Inspect by ID prefix gives the same image; a missing one is an error
    // after an empty list, as Docker.
    let o = berth(&["--root", root, "image", "inspect", &id[7..15]]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["Id"], id.as_str());
    let o = berth(&["--root", root, "image", "inspect", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stdout).trim(), "[]");
    assert_eq!(text(&o.stderr).trim(), "Error: No such image: nosuch");
    let o = berth(&["--root", root, "image", "inspect", "Not/Valid"]);
    assert_eq!(o.status.code(), Some(1));

    // The image's content runs: a bundle whose rootfs is its layer.
    let _cgroups = common::CgroupParentGuard;
    let layer = img["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    for entry in std::fs::read_dir(layer).unwrap().flatten() {
        std::fs::copy(entry.path(), bundle.join("rootfs").join(entry.file_name())).unwrap();
    }
    assert!(
        berth(&["runtime", "spec", "--bundle", bundle.to_str().unwrap()])
            .status
            .success()
    );
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["args"] = img["Config"]["Cmd"].clone();
    cfg["process"]["terminal"] = serde_json::json!(false);
    cfg["mounts"] = serde_json::json!([]);
    cfg["linux"]["maskedPaths"] = serde_json::json!([]);
    cfg["linux"]["readonlyPaths"] = serde_json::json!([]);
    cfg["root"]["readonly"] = serde_json::json!(false);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let state = dir.path().join("rt");
    let o = berth(&[
        "runtime",
        "--root",
        state.to_str().unwrap(),
        "run",
        "--bundle",
        bundle.to_str().unwrap(),
        &format!("hello-cli-{}", std::process::id()),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("Hello from berth!"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn tag_rmi_and_prune() {
    if !need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let root = root.to_str().unwrap();
    // tag loads the built-in source image; the new tag lists beside it.
    let o = berth(&["--root", root, "tag", "hello-world", "me/hi:1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let listing = text(&berth(&["--root", root, "images"]).stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("me/hi ") && l.contains(" 1 ")),
        "{listing}"
    );
    let o = berth(&["--root", root, "tag", "hello-world", "Bad/Name"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).starts_with("Error parsing reference: \"Bad/Name\""),
        "{}",
        text(&o.stderr)
    );
    // By ID with two tags: refused; by tag: only untagged.
    let id = text(&berth(&["--root", root, "images", "-q"]).stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let o = berth(&["--root", root, "rmi", &id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("must be forced"),
        "{}",
        text(&o.stderr)
    );
    let o = berth(&["--root", root, "rmi", "me/hi:1"]);
    assert_eq!(text(&o.stdout), "Untagged: me/hi:1\n");
    // The last tag deletes the image and its layer; a missing name is
    // reported while the others still go.
    let o = berth(&["--root", root, "image", "rm", "hello-world", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.starts_with("Untagged: hello-world:latest\nDeleted: sha256:"),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("Deleted: ")).count(),
        2,
        "{out}"
    );
    assert_eq!(
        text(&o.stderr).trim(),
        "Error response from daemon: No such image: nosuch"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("store/layers"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .map(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .unwrap_or(false)
            })
            .count(),
        0
    );
    // prune -a asks first (stdin says no), and with -f removes all.
    berth(&["--root", root, "image", "inspect", "hello-world"]);
    let o = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--root", root, "image", "prune", "-a"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(text(&o.stderr).contains("Are you sure you want to continue? [y/N]"));
    assert_eq!(
        text(&berth(&["--root", root, "images", "-q"]).stdout)
            .lines()
            .count(),
        1
    );
    let o = berth(&["--root", root, "image", "prune", "-a", "-f"]);
    let out = text(&o.stdout);
    assert!(
        out.starts_with("Deleted Images:\nuntagged: hello-world:latest\n"),
        "{out}"
    );
    let last = out.lines().last().unwrap_or("");
    assert!(
        last.starts_with("Total reclaimed space: ") && last.ends_with("kB"),
        "{out}"
    );
    assert_eq!(text(&berth(&["--root", root, "images", "-q"]).stdout), "");
}

#[test]
fn import_a_directory_a_tarball_and_stdin() {
    if !need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let root = root.to_str().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), "imported\n").unwrap();
    // A directory, with changes; the ID is printed.
    let o = berth(&[
        "--root",
        root,
        "import",
        "-c",
        "CMD [\"/bin/true\"]",
        "--change",
        "ENV A=1",
        "-m",
        "from a dir",
        rootfs.to_str().unwrap(),
        "fromdir:v1",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let v: serde_json::Value =
        serde_json::from_slice(&berth(&["--root", root, "image", "inspect", "fromdir:v1"]).stdout)
            .unwrap();
    assert_eq!(v[0]["Id"], id.as_str());
    assert_eq!(v[0]["Config"]["Cmd"], serde_json::json!(["/bin/true"]));
    assert_eq!(v[0]["Config"]["Env"], serde_json::json!(["A=1"]));
    let layer = v[0]["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{layer}/etc/motd")).unwrap(),
        "imported\n"
    );
    // A gzip tarball on stdin, untagged: listed as <none>.
    let tgz = dir.path().join("rootfs.tgz");
    assert!(Command::new("tar")
        .args([
            "-C",
            rootfs.to_str().unwrap(),
            "-czf",
            tgz.to_str().unwrap(),
            "."
        ])
        .status()
        .unwrap()
        .success());
    let o = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--root", root, "import", "-"])
        .stdin(std::fs::File::open(&tgz).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let listing = text(&berth(&["--root", root, "images"]).stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("<none> ") && l.contains(" <none> ")),
        "{listing}"
    );
    // Bad input: an unknown change or a missing file, one line each.
    let o = berth(&[
        "--root",
        root,
        "import",
        "-c",
        "FROM x",
        tgz.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr).trim(),
        "Error: FROM is not a valid change command"
    );
    let o = berth(&["--root", root, "import", "/nonexistent.tar"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr).lines().count(), 1, "{}", text(&o.stderr));
}

fn d_store(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

#[test]
fn load_a_docker_archive_from_another_store() {
    if !need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    // Store A has hello-world; an archive made from its blobs (config and
    // the uncompressed layer) in Docker ≥ 25's layout loads into store B.
    let v: serde_json::Value =
        serde_json::from_slice(&berth(&["--root", a, "image", "inspect", "hello-world"]).stdout)
            .unwrap();
    let id = v[0]["Id"].as_str().unwrap().to_string();
    let diff = v[0]["RootFS"]["Layers"][0].as_str().unwrap().to_string();
    let arch = dir.path().join("arch");
    std::fs::create_dir_all(arch.join("blobs/sha256")).unwrap();
    for d in [&id, &diff] {
        let hex = &d[7..];
        std::fs::copy(
            format!("{a}/blobs/sha256/{hex}"),
            arch.join("blobs/sha256").join(hex),
        )
        .unwrap();
    }
    let manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", &id[7..]),
        "RepoTags": ["hello-world:latest", "copy/hello:1"],
        "Layers": [format!("blobs/sha256/{}", &diff[7..])]
    }]);
    std::fs::write(arch.join("manifest.json"), manifest.to_string()).unwrap();
    let tarball = dir.path().join("hello.tar");
    assert!(Command::new("tar")
        .args([
            "-C",
            arch.to_str().unwrap(),
            "-cf",
            tarball.to_str().unwrap(),
            "manifest.json",
            "blobs"
        ])
        .status()
        .unwrap()
        .success());
    let o = berth(&["--root", b, "load", "-i", tarball.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "Loaded image: hello-world:latest\nLoaded image: copy/hello:1\n"
    );
    // Not a terminal: no progress at all.
    assert_eq!(text(&o.stderr), "");
    // On a terminal, progress is drawn (and -q turns it off).
    let cmd = |extra: &str| {
        format!(
            "{} --root {} load {extra} -i {}",
            env!("CARGO_BIN_EXE_berth"),
            d_store(&dir, "tty"),
            tarball.display()
        )
    };
    let tty = Command::new("script")
        .args(["-qec", &cmd(""), "/dev/null"])
        .output()
        .unwrap();
    assert!(
        text(&tty.stdout).contains("Loading"),
        "{}",
        text(&tty.stdout)
    );
    assert!(
        text(&tty.stdout).contains("Loaded image: hello-world:latest"),
        "{}",
        text(&tty.stdout)
    );
    let quiet = Command::new("script")
        .args(["-qec", &cmd("-q"), "/dev/null"])
        .output()
        .unwrap();
    assert!(
        !text(&quiet.stdout).contains("Loading"),
        "{}",
        text(&quiet.stdout)
    );
    // Same image ID in the other store; and from stdin, untagged → its ID.
    assert_eq!(
        text(&berth(&["--root", b, "images", "-q", "--no-trunc"]).stdout).trim(),
        id
    );
    let plain = serde_json::json!([{"Config": format!("blobs/sha256/{}", &id[7..]), "Layers": [format!("blobs/sha256/{}", &diff[7..])]}]);
    std::fs::write(arch.join("manifest.json"), plain.to_string()).unwrap();
    let c = dir.path().join("c");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -cf - manifest.json blobs | {} --root {} load",
            arch.display(),
            env!("CARGO_BIN_EXE_berth"),
            c.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), format!("Loaded image ID: {id}\n"));
    // stdin redirected from a file is read as a file (members in parallel).
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --root {} load < {}",
            env!("CARGO_BIN_EXE_berth"),
            d_store(&dir, "redirected"),
            tarball.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "Loaded image: hello-world:latest\nLoaded image: copy/hello:1\n"
    );
    // A broken archive: one line, nothing stored.
    std::fs::write(dir.path().join("junk.tar"), b"not a tar at all").unwrap();
    let o = berth(&[
        "--root",
        b,
        "load",
        "-i",
        dir.path().join("junk.tar").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr).lines().count(), 1, "{}", text(&o.stderr));
}

#[test]
fn load_archives_saved_by_podman_keeping_the_image_id() {
    if !need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A rootfs tarball, imported into a private podman store, saved both ways.
    let rootfs = d.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), "from podman\n").unwrap();
    let tgz = d.join("rootfs.tgz");
    assert!(Command::new("tar")
        .args([
            "-C",
            rootfs.to_str().unwrap(),
            "-czf",
            tgz.to_str().unwrap(),
            "."
        ])
        .status()
        .unwrap()
        .success());
    let podman = |args: &[&str]| {
        let o = podman(d, args);
        assert!(o.status.success(), "podman {args:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    let id = podman(&[
        "import",
        "-q",
        tgz.to_str().unwrap(),
        "localhost/frompodman:1",
    ])
    .trim()
    .to_string();
    let root = d.join("store");
    let root = root.to_str().unwrap();
    for format in ["docker-archive", "oci-archive"] {
        let out = d.join(format!("{format}.tar"));
        podman(&[
            "save",
            "-q",
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
            "localhost/frompodman:1",
        ]);
        let o = berth(&["--root", root, "load", "-i", out.to_str().unwrap()]);
        assert!(o.status.success(), "{format}: {}", text(&o.stderr));
        assert_eq!(
            text(&o.stdout),
            "Loaded image: localhost/frompodman:1\n",
            "{format}"
        );
        let v: serde_json::Value = serde_json::from_slice(
            &berth(&["--root", root, "image", "inspect", "localhost/frompodman:1"]).stdout,
        )
        .unwrap();
        assert_eq!(
            v[0]["Id"].as_str().map(|s| s.trim_start_matches("sha256:")),
            Some(id.trim_start_matches("sha256:")),
            "{format}"
        );
        let layer = v[0]["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap();
        assert_eq!(
            std::fs::read_to_string(format!("{layer}/etc/motd")).unwrap(),
            "from podman\n"
        );
    }
    // skopeo copies podman's archive into an OCI layout (layers gzipped);
    // tarred up, it loads with the same image ID, and its ref name tag.
    let layout = d.join("layout");
    let o = Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--dest-compress",
            &format!("docker-archive:{}", d.join("docker-archive.tar").display()),
            &format!("oci:{}:skopeo/copied:2", layout.display()),
        ])
        .output()
        .expect("skopeo (scripts/setup.sh installs it)");
    assert!(o.status.success(), "skopeo: {}", text(&o.stderr));
    let oci_tar = d.join("skopeo.tar");
    assert!(Command::new("tar")
        .args([
            "-C",
            layout.to_str().unwrap(),
            "-cf",
            oci_tar.to_str().unwrap(),
            "."
        ])
        .status()
        .unwrap()
        .success());
    let other = d.join("skopeo-store");
    let other = other.to_str().unwrap();
    let o = berth(&["--root", other, "load", "-i", oci_tar.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "Loaded image: skopeo/copied:2\n");
    let v: serde_json::Value = serde_json::from_slice(
        &berth(&["--root", other, "image", "inspect", "skopeo/copied:2"]).stdout,
    )
    .unwrap();
    assert_eq!(
        v[0]["Id"].as_str().map(|s| s.trim_start_matches("sha256:")),
        Some(id.trim_start_matches("sha256:"))
    );
    // The manifest skopeo wrote (gzip layers) is kept: its digest is the
    // image's RepoDigest-to-be, so it must survive.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let saved = d.join("resaved.tar");
    let o = berth(&[
        "--root",
        other,
        "save",
        "-o",
        saved.to_str().unwrap(),
        "skopeo/copied:2",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let listing = Command::new("tar")
        .args(["-tf", saved.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        text(&listing.stdout).contains(&format!("blobs/sha256/{}", &manifest_digest[7..])),
        "{}",
        text(&listing.stdout)
    );
}

#[test]
fn save_round_trips_and_podman_runs_the_saved_image_with_berth_runtime() {
    if !need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (d.join("a"), d.join("b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    assert!(berth(&["--root", a, "tag", "hello-world", "saved/hello:1"])
        .status
        .success());
    let id = text(&berth(&["--root", a, "images", "-q", "--no-trunc"]).stdout)
        .trim()
        .to_string();
    // -o: complete file only; the same bytes every time.
    let out = d.join("hello.tar");
    let o = berth(&[
        "--root",
        a,
        "save",
        "-o",
        out.to_str().unwrap(),
        "saved/hello:1",
        "hello-world",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let first = std::fs::read(&out).unwrap();
    assert!(berth(&[
        "--root",
        a,
        "save",
        "-o",
        out.to_str().unwrap(),
        "saved/hello:1",
        "hello-world"
    ])
    .status
    .success());
    assert_eq!(first, std::fs::read(&out).unwrap());
    assert!(!std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("berth-tmp")));
    // Loads back with the same ID and both tags.
    let o = berth(&["--root", b, "load", "-i", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&berth(&["--root", b, "images", "-q", "--no-trunc"]).stdout).trim(),
        id
    );
    // A missing image: an error and no file.
    let missing = d.join("missing.tar");
    let o = berth(&[
        "--root",
        a,
        "save",
        "-o",
        missing.to_str().unwrap(),
        "nosuch",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!missing.exists());
    // podman loads berth's archive and runs the image, with berth-runtime.
    let podman = |args: &[&str]| podman(d, args);
    let o = podman(&["load", "-q", "-i", out.to_str().unwrap()]);
    assert!(o.status.success(), "podman load: {}", text(&o.stderr));
    let o = podman(&["run", "--rm", "--network", "none", &id[7..19]]);
    assert!(o.status.success(), "podman run: {}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("Hello from berth!"),
        "{}",
        text(&o.stdout)
    );
    assert!(
        text(&o.stdout).contains("its process ID is 1 "),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn images_filters_and_digests() {
    if !need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let root = root.to_str().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(rootfs.join("f"), "x").unwrap();
    let rootfs = rootfs.to_str().unwrap();
    berth(&["--root", root, "image", "inspect", "hello-world"]);
    let web = text(
        &berth(&[
            "--root",
            root,
            "import",
            "-c",
            "LABEL tier=web",
            rootfs,
            "web:1",
        ])
        .stdout,
    );
    let dangling = text(&berth(&["--root", root, "import", rootfs]).stdout);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--root", root, "images", "-q", "--no-trunc"];
        all.extend_from_slice(args);
        let mut v: Vec<String> = text(&berth(&all).stdout)
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let hello = ids(&["-f", "reference=hello-world"]);
    assert_eq!(hello.len(), 1);
    assert_eq!(
        ids(&["-f", "dangling=true"]),
        vec![dangling.trim().to_string()]
    );
    assert_eq!(ids(&["-f", "reference=we*"]), vec![web.trim().to_string()]);
    assert_eq!(ids(&["-f", "reference=*/*"]), Vec::<String>::new());
    assert_eq!(ids(&["-f", "label=tier=web"]), vec![web.trim().to_string()]);
    assert_eq!(ids(&["-f", "label=tier"]), vec![web.trim().to_string()]);
    assert_eq!(ids(&["-f", "before=web:1"]), hello);
    // Two values of one key are ORed; two keys ANDed.
    assert_eq!(
        ids(&["-f", "reference=web", "-f", "reference=hello-world"]).len(),
        2
    );
    assert_eq!(
        ids(&["-f", "reference=web", "-f", "dangling=true"]),
        Vec::<String>::new()
    );
    let o = berth(&["--root", root, "images", "-f", "bogus=1"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr).trim(), "Error: invalid filter 'bogus'");
    let o = berth(&["--root", root, "images", "-f", "before=nosuch"]);
    assert_eq!(text(&o.stderr).trim(), "Error: No such image: nosuch");
    // --digests adds the column; images without a manifest show <none>.
    let listing =
        text(&berth(&["--root", root, "images", "--digests", "-f", "reference=web"]).stdout);
    assert_eq!(
        listing
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "REPOSITORY",
            "TAG",
            "DIGEST",
            "IMAGE",
            "ID",
            "CREATED",
            "SIZE"
        ]
    );
    assert_eq!(
        listing.lines().nth(1).unwrap().split_whitespace().nth(2),
        Some("<none>")
    );
}

#[test]
fn images_and_inspect_format_go_templates() {
    if !need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let root = root.to_str().unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&berth(&["--root", root, "image", "inspect", "hello-world"]).stdout)
            .unwrap();
    let id = v[0]["Id"].as_str().unwrap().to_string();
    let o = berth(&[
        "--root",
        root,
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size | upper}}",
    ]);
    let size = text(&o.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap_or("")
        .to_string();
    assert!(size.ends_with("KB"), "upper applied: {}", text(&o.stdout));
    assert!(
        text(&o.stdout).starts_with(&format!("hello-world:latest {} ", &id[7..19])),
        "{}",
        text(&o.stdout)
    );
    let o = berth(&[
        "--root",
        root,
        "images",
        "--format",
        "table {{.Repository}}\\t{{.ID}}",
    ]);
    let lines: Vec<String> = text(&o.stdout).lines().map(str::to_string).collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["REPOSITORY", "IMAGE", "ID"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["hello-world", &id[7..19]]
    );
    let o = berth(&["--root", root, "images", "--format", "json"]);
    let row: serde_json::Value =
        serde_json::from_str(text(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(row["Repository"], "hello-world");
    assert_eq!(row["ID"], &id[7..19]);
    let o = berth(&[
        "--root",
        root,
        "image",
        "inspect",
        "-f",
        "{{.Id}} {{json .Config.Cmd}}",
        "hello-world",
    ]);
    assert_eq!(text(&o.stdout), format!("{id} [\"/hello\"]\n"));
    let o = berth(&[
        "--root",
        root,
        "history",
        "--format",
        "{{.ID}}|{{.Size}}",
        "hello-world",
    ]);
    let line = text(&o.stdout);
    assert!(
        line.starts_with(&format!("{}|", &id[7..19])) && line.trim_end().ends_with("kB"),
        "{line}"
    );
    let o = berth(&["--root", root, "images", "--format", "{{.Nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).starts_with("Error: template: "),
        "{}",
        text(&o.stderr)
    );
}

/// A docker-archive of `layers` layers, each with `files` small files and
/// one larger one, written with GNU tar from a directory tree.
fn many_file_archive(d: &std::path::Path, layers: usize, files: usize) -> std::path::PathBuf {
    let arch = d.join("arch-src");
    let mut diff_ids = Vec::new();
    let mut names = Vec::new();
    for l in 0..layers {
        let tree = d.join(format!("tree{l}"));
        for f in 0..files {
            let p = tree.join(format!("l{l}/d{}/f{f}", f / 50));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("layer {l} file {f}\n").repeat(20)).unwrap();
        }
        std::fs::write(tree.join(format!("l{l}/big")), vec![l as u8 + 1; 4 << 20]).unwrap();
        let name = format!("layer{l}/layer.tar");
        std::fs::create_dir_all(arch.join(format!("layer{l}"))).unwrap();
        let out = arch.join(&name);
        assert!(Command::new("tar")
            .args(["--numeric-owner", "--sort=name", "-C"])
            .arg(&tree)
            .args(["-cf"])
            .arg(&out)
            .arg(".")
            .status()
            .unwrap()
            .success());
        let bytes = std::fs::read(&out).unwrap();
        use sha2::Digest as _;
        diff_ids.push(format!("sha256:{:x}", sha2::Sha256::digest(&bytes)));
        names.push(name);
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    std::fs::write(arch.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{"Config": "config.json", "RepoTags": ["killed/load:1"], "Layers": names}]);
    std::fs::write(arch.join("manifest.json"), manifest.to_string()).unwrap();
    let tarball = d.join("many.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&arch)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap()
        .success());
    tarball
}

#[test]
fn a_load_killed_at_any_moment_leaves_a_readable_store() {
    if !need_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tarball = many_file_archive(d, 4, 400);
    let root = d.join("store");
    let root = root.to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_berth");
    // How long a whole load takes here, to kill at points all through it.
    let scratch = d.join("scratch");
    let t0 = std::time::Instant::now();
    let o = berth(&[
        "--root",
        scratch.to_str().unwrap(),
        "load",
        "-q",
        "-i",
        tarball.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let full = t0.elapsed().as_millis() as u64;
    let mut completed = 0;
    for delay_ms in (0..12u64).map(|k| full * k / 10) {
        let mut child = Command::new(bin)
            .args([
                "--root",
                root,
                "load",
                "-q",
                "-i",
                tarball.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        if child.wait().unwrap().success() {
            completed += 1;
        }
        // Whatever moment it died at, the next commands read the store.
        let o = berth(&["--root", root, "images"]);
        assert!(
            o.status.success(),
            "after {delay_ms} ms: {}",
            text(&o.stderr)
        );
        let listed = text(&o.stdout).contains("killed/load");
        if listed {
            // A listed image is complete: it saves, from its files.
            let o = berth(&[
                "--root",
                root,
                "save",
                "-o",
                d.join("s.tar").to_str().unwrap(),
                "killed/load:1",
            ]);
            assert!(
                o.status.success(),
                "after {delay_ms} ms: {}",
                text(&o.stderr)
            );
        }
        let o = berth(&["--root", root, "image", "rm", "killed/load:1"]);
        assert!(o.status.success() || !listed, "{}", text(&o.stderr));
    }
    // A full load after all that works, and the image comes back byte for byte.
    let o = berth(&["--root", root, "load", "-i", tarball.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let saved = d.join("after.tar");
    let o = berth(&[
        "--root",
        root,
        "save",
        "-o",
        saved.to_str().unwrap(),
        "killed/load:1",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let other = d.join("other");
    let o = berth(&[
        "--root",
        other.to_str().unwrap(),
        "load",
        "-i",
        saved.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Removing everything leaves no layer, blob or temp dir behind.
    let o = berth(&["--root", root, "image", "prune", "-a", "-f"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let left = |sub: &str| -> Vec<String> {
        std::fs::read_dir(std::path::Path::new(root).join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".tmp" && n != "sha256")
            .collect()
    };
    assert_eq!(left("layers"), Vec::<String>::new());
    assert!(
        std::fs::read_dir(std::path::Path::new(root).join("layers/.tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(
        std::fs::read_dir(std::path::Path::new(root).join("blobs/sha256"))
            .map(|mut r| r.next().is_none())
            .unwrap_or(true)
    );
    eprintln!("a load takes {full} ms; {completed} of 12 killed loads had finished");
}
