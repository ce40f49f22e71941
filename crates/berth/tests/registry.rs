//! Registries end to end through the `berth` binary: Debian's
//! docker-registry on 127.0.0.1 (plain HTTP, and TLS with a CA made here
//! plus htpasswd auth), skopeo pulling back what berth pushed and the
//! reverse, and hand-written hostile servers.

mod common;
#[path = "registry/server.rs"]
mod server;

use common::{need_root, text, Store};
use server::{json_headers, Answer, Hostile, Registry};
use sha2::Digest as _;
use std::path::Path;
use std::process::{Command, Output};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A store with its own berth config dir and Docker client config dir.
struct Env {
    store: Store,
    config: tempfile::TempDir,
    docker: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            store: Store::new(),
            config: tempfile::tempdir().unwrap(),
            docker: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.store.cmd(args);
        c.env("BERTH_CONFIG_DIR", self.config.path())
            .env("DOCKER_CONFIG", self.docker.path())
            .env("BERTH_REGISTRY_TIMEOUT", "3");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run berth")
    }

    fn ok(&self, args: &[&str]) -> String {
        common::succeeded(args, self.run(args))
    }

    /// Run, expect exit 1 and return stderr.
    fn fails(&self, args: &[&str]) -> String {
        common::failed(args, self.run(args))
    }

    /// Trust `reg`'s CA through certs.d.
    fn trust(&self, reg: &Registry) {
        let dir = self.config.path().join("certs.d").join(reg.host());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(reg.ca.as_ref().unwrap(), dir.join("ca.crt")).unwrap();
    }

    fn image_count(&self) -> usize {
        self.ok(&["images", "-q"]).lines().count()
    }
}

fn skopeo(args: &[&str]) -> String {
    let o = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed");
    assert!(o.status.success(), "skopeo {args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

fn skopeo_digest(args: &[&str], image: &str) -> String {
    let mut a = vec!["inspect"];
    a.extend_from_slice(args);
    a.push(image);
    let v: serde_json::Value = serde_json::from_str(&skopeo(&a)).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

/// The line `<tag>: digest: sha256:… size: N` of push output.
fn pushed_digest(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split(": digest: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest line in {out}"))
        .to_string()
}

fn pulled_digest(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no Digest line in {out}"))
        .to_string()
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(b)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A one-layer image: (gzip layer, config, manifest).
struct Fixture {
    layer: Vec<u8>,
    layer_digest: String,
    config: Vec<u8>,
    config_digest: String,
    manifest: Vec<u8>,
}

fn layer_tar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1);
    h.set_cksum();
    t.append_data(&mut h, name, data).unwrap();
    t.into_inner().unwrap()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, b).unwrap();
    gz.finish().unwrap()
}

fn fixture_for(arch: &str, content: &[u8]) -> Fixture {
    let tar = layer_tar("hello.txt", content);
    let layer = gzip(&tar);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux", "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    Fixture {
        layer_digest: sha256(&layer),
        config_digest: sha256(&config),
        layer,
        config,
        manifest,
    }
}

fn fixture() -> Fixture {
    fixture_for(host_arch(), b"hello from a registry\n")
}

/// A registry serving `fx` as `x:1`; `tweak` may answer first.
fn serve(
    fx: Fixture,
    tweak: impl Fn(&server::Request, &Fixture) -> Option<Answer> + Send + Sync + 'static,
) -> Hostile {
    Hostile::start(Box::new(move |req| {
        if let Some(a) = tweak(req, &fx) {
            return a;
        }
        let p = req.path.as_str();
        if p == "/v2/" {
            return Answer::Full(200, json_headers("application/json"), b"{}".to_vec());
        }
        if p.starts_with("/v2/x/manifests/") {
            return Answer::Full(200, json_headers(OCI_MANIFEST), fx.manifest.clone());
        }
        if p == format!("/v2/x/blobs/{}", fx.config_digest) {
            return Answer::Full(200, vec![], fx.config.clone());
        }
        if p == format!("/v2/x/blobs/{}", fx.layer_digest) {
            return Answer::Full(200, vec![], fx.layer.clone());
        }
        Answer::Full(
            404,
            vec![],
            b"{\"errors\":[{\"code\":\"BLOB_UNKNOWN\",\"message\":\"blob unknown\"}]}".to_vec(),
        )
    }))
}

fn blob_files(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

// ------------------------------------------------------------ docker-registry

#[test]
fn push_then_pull_back_with_skopeo_and_berth_digests_intact() {
    if !need_root() {
        return;
    }
    let reg = Registry::plain();
    let env = Env::new();
    let tarball = common::busybox_tarball();
    let name = format!("{}/bb:1", reg.host());
    env.ok(&["import", tarball.to_str().unwrap(), &name]);
    let out = env.ok(&["push", &name]);
    assert!(
        out.contains(&format!(
            "The push refers to repository [{}/bb]",
            reg.host()
        )),
        "{out}"
    );
    assert!(out.lines().any(|l| l.ends_with(": Pushed")), "{out}");
    let digest = pushed_digest(&out);
    let remote = format!("docker://{name}");
    assert_eq!(skopeo_digest(&["--tls-verify=false"], &remote), digest);
    // Again: everything is there already.
    let out = env.ok(&["push", &name]);
    assert!(out.contains(": Layer already exists"), "{out}");
    assert_eq!(pushed_digest(&out), digest);
    // skopeo copies it whole (blobs verified) into a directory.
    let dir = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &remote,
        &format!("dir:{}", dir.path().join("img").display()),
    ]);
    // A fresh store pulls it: same digest, same image ID.
    let other = Env::new();
    let out = other.ok(&["pull", &name]);
    assert_eq!(pulled_digest(&out), digest, "{out}");
    assert!(out.contains(": Pull complete"), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    assert_eq!(out.lines().last().unwrap(), name);
    let id = |e: &Env| e.ok(&["image", "inspect", "-f", "{{.Id}}", &name]);
    assert_eq!(id(&other), id(&env));
    let out = other.ok(&["pull", &name]);
    assert!(out.contains("Status: Image is up to date for"), "{out}");
    assert!(out.contains(": Already exists"), "{out}");
    // -q: the reference only.
    assert_eq!(other.ok(&["pull", "-q", &name]).trim(), name);
    // Pulled again by digest.
    let by_digest = format!("{}/bb@{digest}", reg.host());
    let out = other.ok(&["pull", &by_digest]);
    assert_eq!(pulled_digest(&out), digest);
    // A digest is not a tag: RepoTags keeps the tag, RepoDigests has both.
    let tags = other.ok(&["image", "inspect", "-f", "{{json .RepoTags}}", &by_digest]);
    assert!(!tags.contains('@'), "{tags}");
    let digests = other.ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .RepoDigests}}",
        &by_digest,
    ]);
    assert!(digests.contains(&format!("/bb@{digest}")), "{digests}");
    // The pulled image pushes again to another repository with the same
    // digest (its manifest is pushed as it came), its blobs mounted.
    let copy = format!("{}/copy:1", reg.host());
    other.ok(&["tag", &name, &copy]);
    let out = other.ok(&["push", &copy]);
    assert_eq!(pushed_digest(&out), digest);
    assert!(out.contains("Mounted from bb"), "{out}");
}

#[test]
fn an_image_skopeo_pushed_is_pulled_and_run() {
    if !need_root() {
        return;
    }
    let reg = Registry::plain();
    let env = Env::new().with_busybox_archive();
    let name = format!("{}/sk:2", reg.host());
    // skopeo compresses the layers (gzip) and writes its own manifest.
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("docker-archive:{}", env.archive.display()),
        &format!("docker://{name}"),
    ]);
    let digest = skopeo_digest(&["--tls-verify=false"], &format!("docker://{name}"));
    let fresh = Env::new();
    // run pulls a missing image (--pull missing is the default).
    let o = fresh.run(&["run", "--rm", &name, "echo", "ran"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), "ran");
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("Unable to find image '{name}' locally")),
        "{err}"
    );
    assert!(err.contains(&format!("Digest: {digest}")), "{err}");
    // --pull never on a missing image fails; --pull always pulls.
    let missing = format!("{}/nothere:1", reg.host());
    let o = fresh.run(&["create", "--pull", "never", &missing]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    let o = fresh.run(&["run", "--rm", "--pull", "always", &name, "true"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("Image is up to date"),
        "{}",
        text(&o.stderr)
    );
    let o = fresh.run(&["run", "--rm", &missing]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("manifest unknown"),
        "{}",
        text(&o.stderr)
    );
}

impl Env {
    /// The busybox image saved to an archive (for skopeo).
    fn with_busybox_archive(self) -> ArchiveEnv {
        let tarball = common::busybox_tarball();
        self.ok(&["import", tarball.to_str().unwrap(), "busybox:latest"]);
        let archive = self.config.path().join("busybox.tar");
        self.ok(&["save", "-o", archive.to_str().unwrap(), "busybox:latest"]);
        ArchiveEnv {
            _env: self,
            archive,
        }
    }
}

struct ArchiveEnv {
    _env: Env,
    archive: std::path::PathBuf,
}

#[test]
fn a_multi_platform_index_selects_the_platform() {
    if !need_root() {
        return;
    }
    let reg = Registry::plain();
    // An OCI layout of an index over two images, copied by skopeo.
    let layout = tempfile::tempdir().unwrap();
    let blobs = layout.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = sha256(b);
        std::fs::write(blobs.join(&d[7..]), b).unwrap();
        d
    };
    let other_arch = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let mut entries = Vec::new();
    for (arch, content) in [(other_arch, &b"other\n"[..]), (host_arch(), &b"host\n"[..])] {
        let fx = fixture_for(arch, content);
        put(&fx.layer);
        put(&fx.config);
        let m = put(&fx.manifest);
        entries.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": m, "size": fx.manifest.len(),
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
    }))
    .unwrap();
    let index_digest = put(&index);
    std::fs::write(
        layout.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.path().join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": OCI_INDEX, "digest": index_digest, "size": index.len(),
                           "annotations": {"org.opencontainers.image.ref.name": "multi"}}],
        }))
        .unwrap(),
    )
    .unwrap();
    let name = format!("{}/multi:1", reg.host());
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.path().display()),
        &format!("docker://{name}"),
    ]);
    let env = Env::new();
    let out = env.ok(&["pull", &name]);
    assert_eq!(pulled_digest(&out), index_digest, "{out}");
    let arch = env.ok(&["image", "inspect", "-f", "{{.Architecture}}", &name]);
    assert_eq!(arch.trim(), host_arch());
    let out = env.ok(&["pull", "--platform", &format!("linux/{other_arch}"), &name]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    let arch = env.ok(&["image", "inspect", "-f", "{{.Architecture}}", &name]);
    assert_eq!(arch.trim(), other_arch);
    let e = env.fails(&["pull", "--platform", "linux/s390x", &name]);
    assert!(e.contains("no matching manifest for linux/s390x"), "{e}");
}

#[test]
fn tls_registry_with_htpasswd_login_push_pull_logout() {
    if !need_root() {
        return;
    }
    let reg = Registry::tls_auth();
    let env = Env::new();
    let host = reg.host();
    let name = format!("{host}/secure:1");
    env.ok(&["tag", "hello-world", &name]);
    // Without the CA: the certificate is refused.
    let e = env.fails(&["push", &name]);
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    env.trust(&reg);
    // Without credentials: refused.
    let e = env.fails(&["push", &name]);
    assert!(
        e.contains("unauthorized") || e.contains("authentication required"),
        "{e}"
    );
    // A wrong password is refused and not stored.
    let mut c = env.cmd(&["login", "-u", "tester", "--password-stdin", &host]);
    let o = with_stdin(&mut c, "wrong\n");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("incorrect username or password"),
        "{}",
        text(&o.stderr)
    );
    assert!(!env.docker.path().join("config.json").exists());
    let mut c = env.cmd(&["login", "-u", "tester", "--password-stdin", &host]);
    let o = with_stdin(&mut c, "s3cret\n");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), "Login Succeeded");
    let cfg_path = env.docker.path().join("config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    assert_eq!(cfg["auths"][&host]["auth"], "dGVzdGVyOnMzY3JldA==");
    let out = env.ok(&["push", &name]);
    let digest = pushed_digest(&out);
    // skopeo reads it back with the same CA and credentials.
    let certs = env.config.path().join("certs.d").join(&host);
    let got = skopeo_digest(
        &[
            "--cert-dir",
            certs.to_str().unwrap(),
            "--creds",
            "tester:s3cret",
        ],
        &format!("docker://{name}"),
    );
    assert_eq!(got, digest);
    // Another store with the same client config pulls it.
    let other = Env::new();
    other.trust(&reg);
    std::fs::copy(&cfg_path, other.docker.path().join("config.json")).unwrap();
    let out = other.ok(&["pull", &name]);
    assert_eq!(pulled_digest(&out), digest);
    // Credentials never show in output.
    assert!(!out.contains("s3cret"));
    let out = env.ok(&["logout", &host]);
    assert_eq!(out.trim(), format!("Removing login credentials for {host}"));
    let out = env.ok(&["logout", &host]);
    assert_eq!(out.trim(), format!("Not logged in to {host}"));
    let e = env.fails(&["pull", &format!("{host}/secure:1")]);
    assert!(
        e.contains("unauthorized") || e.contains("pull access denied"),
        "{e}"
    );
    // -p works, with Docker's warning.
    let o = env.run(&["login", "-u", "tester", "-p", "s3cret", &host]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("WARNING! Using --password via the CLI is insecure"));
    let out = env.ok(&["image", "pull", &name]);
    assert!(out.contains("Status: Image is up to date for"), "{out}");
}

fn with_stdin(c: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_credential_helper_stores_and_gives_back_the_secret() {
    if !need_root() {
        return;
    }
    let reg = Registry::tls_auth();
    let env = Env::new();
    env.trust(&reg);
    let host = reg.host();
    // A docker-credential-test helper keeping its secrets in a file.
    let bin = tempfile::tempdir().unwrap();
    let store = bin.path().join("secrets");
    let helper = bin.path().join("docker-credential-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nf={}\ncase \"$1\" in\n store) cat > \"$f\" ;;\n get) if [ -s \"$f\" ]; then cat \"$f\"; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n erase) rm -f \"$f\" ;;\nesac\n",
            store.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        env.docker.path().join("config.json"),
        r#"{"credsStore":"test"}"#,
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let mut c = env.cmd(&["login", "-u", "tester", "--password-stdin", &host]);
    c.env("PATH", &path);
    let o = with_stdin(&mut c, "s3cret");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    assert_eq!(saved["Secret"], "s3cret");
    assert_eq!(saved["ServerURL"], host.as_str());
    let cfg = std::fs::read_to_string(env.docker.path().join("config.json")).unwrap();
    assert!(!cfg.contains("auth\""), "{cfg}");
    let name = format!("{host}/helped:1");
    env.ok(&["tag", "hello-world", &name]);
    let mut c = env.cmd(&["push", &name]);
    c.env("PATH", &path);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut c = env.cmd(&["logout", &host]);
    c.env("PATH", &path);
    assert!(c.output().unwrap().status.success());
    assert!(!store.exists());
}

#[test]
fn push_and_pull_all_tags_in_chunks() {
    if !need_root() {
        return;
    }
    let reg = Registry::plain();
    let env = Env::new();
    // Uploads larger than 64 KiB go in PATCH chunks.
    std::fs::write(
        env.config.path().join("daemon.json"),
        r#"{"registry-upload-chunk-size": 65536, "max-concurrent-downloads": 1}"#,
    )
    .unwrap();
    let tarball = common::busybox_tarball();
    let repo = format!("{}/tags", reg.host());
    env.ok(&["import", tarball.to_str().unwrap(), &format!("{repo}:a")]);
    env.ok(&["tag", &format!("{repo}:a"), &format!("{repo}:b")]);
    let e = env.fails(&["push", "-a", &format!("{repo}:a")]);
    assert!(e.contains("tag can't be used with --all-tags"), "{e}");
    let out = env.ok(&["push", "-a", &repo]);
    assert!(out.contains("a: digest: "), "{out}");
    assert!(out.contains("b: digest: "), "{out}");
    assert_eq!(
        env.ok(&["push", "-q", &format!("{repo}:a")]).trim(),
        format!("{repo}:a")
    );
    let tags = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{repo}"),
    ]);
    assert!(tags.contains("\"a\"") && tags.contains("\"b\""), "{tags}");
    let other = Env::new();
    let out = other.ok(&["pull", "-a", &repo]);
    assert_eq!(out.lines().last().unwrap(), repo);
    let listed = other.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(listed.contains(&format!("{repo}:a")), "{listed}");
    assert!(listed.contains(&format!("{repo}:b")), "{listed}");
    // The layer unpacked equals the one pushed.
    let id = |e: &Env| e.ok(&["image", "inspect", "-f", "{{.Id}}", &format!("{repo}:b")]);
    assert_eq!(id(&other), id(&env));
}

// ------------------------------------------------------------ hostile servers

#[test]
fn a_blob_with_the_wrong_digest_stores_nothing() {
    if !need_root() {
        return;
    }
    let srv = serve(fixture(), |req, fx| {
        (req.path == format!("/v2/x/blobs/{}", fx.layer_digest)).then(|| {
            let mut bad = fx.layer.clone();
            let n = bad.len();
            bad[n - 10] ^= 0xff;
            Answer::Full(200, vec![], bad)
        })
    });
    let env = Env::new();
    let e = env.fails(&["pull", &format!("{}/x:1", srv.host())]);
    assert!(e.contains("sha256:"), "{e}");
    assert_eq!(env.image_count(), 0);
    assert_eq!(blob_files(env.store.root()), 0);
}

#[test]
fn a_manifest_with_the_wrong_digest_or_media_type_is_refused() {
    if !need_root() {
        return;
    }
    let fx = fixture();
    let real = sha256(&fx.manifest);
    let srv = serve(fx, |req, fx| {
        if req.path == "/v2/x/manifests/wrongtype" {
            return Some(Answer::Full(
                200,
                json_headers(OCI_INDEX),
                fx.manifest.clone(),
            ));
        }
        if req.path.starts_with("/v2/x/manifests/sha256:") {
            let mut m = fx.manifest.clone();
            m.push(b' ');
            return Some(Answer::Full(200, json_headers(OCI_MANIFEST), m));
        }
        if req.path == "/v2/x/manifests/schema1" {
            return Some(Answer::Full(
                200,
                json_headers("application/vnd.docker.distribution.manifest.v1+prettyjws"),
                br#"{"schemaVersion":1,"name":"x","tag":"schema1","fsLayers":[]}"#.to_vec(),
            ));
        }
        None
    });
    let env = Env::new();
    let e = env.fails(&["pull", &format!("{}/x:wrongtype", srv.host())]);
    assert!(
        e.contains("differs from the media type it came with"),
        "{e}"
    );
    let e = env.fails(&["pull", &format!("{}/x@{real}", srv.host())]);
    assert!(e.contains("digest mismatch"), "{e}");
    let e = env.fails(&["pull", &format!("{}/x:schema1", srv.host())]);
    assert!(e.contains("schema1 manifests are not supported"), "{e}");
    assert_eq!(env.image_count(), 0);
}

#[test]
fn a_manifest_that_is_also_an_index_is_refused() {
    if !need_root() {
        return;
    }
    let srv = serve(fixture(), |req, fx| {
        req.path.starts_with("/v2/x/manifests/").then(|| {
            let mut v: serde_json::Value = serde_json::from_slice(&fx.manifest).unwrap();
            v["manifests"] = serde_json::json!([]);
            Answer::Full(
                200,
                json_headers(OCI_MANIFEST),
                serde_json::to_vec(&v).unwrap(),
            )
        })
    });
    let env = Env::new();
    let e = env.fails(&["pull", &format!("{}/x:1", srv.host())]);
    assert!(e.contains("ambiguous"), "{e}");
}

#[test]
fn a_huge_or_endless_manifest_is_refused() {
    if !need_root() {
        return;
    }
    let srv = serve(fixture(), |req, _| match req.path.as_str() {
        "/v2/x/manifests/endless" => Some(Answer::Endless(200, json_headers(OCI_MANIFEST))),
        "/v2/x/manifests/huge" => Some(Answer::Full(
            200,
            json_headers(OCI_MANIFEST),
            vec![b' '; 5 << 20],
        )),
        _ => None,
    });
    let env = Env::new();
    for tag in ["endless", "huge"] {
        let t = std::time::Instant::now();
        let e = env.fails(&["pull", &format!("{}/x:{tag}", srv.host())]);
        assert!(e.contains("larger than the limit"), "{e}");
        assert!(t.elapsed().as_secs() < 20);
    }
}

#[test]
fn a_blob_redirect_to_another_host_gets_no_credentials() {
    if !need_root() {
        return;
    }
    // The blob store: answers 401 to everything and records what it got.
    let storage = Hostile::start(Box::new(|_| {
        Answer::Full(
            401,
            vec![("WWW-Authenticate".into(), "Basic realm=\"s\"".into())],
            vec![],
        )
    }));
    let storage_url = format!("http://localhost:{}/blob", storage.port);
    let srv = serve(fixture(), move |req, fx| {
        // The registry wants Basic credentials.
        if req.header("authorization") != Some("Basic dXNlcjpzZWNyZXQ=") {
            return Some(Answer::Full(
                401,
                vec![("WWW-Authenticate".into(), "Basic realm=\"r\"".into())],
                vec![],
            ));
        }
        (req.path == format!("/v2/x/blobs/{}", fx.layer_digest))
            .then(|| Answer::Full(307, vec![("Location".into(), storage_url.clone())], vec![]))
    });
    let env = Env::new();
    std::fs::write(
        env.docker.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"dXNlcjpzZWNyZXQ="}}}}}}"#,
            srv.host()
        ),
    )
    .unwrap();
    let e = env.fails(&["pull", &format!("{}/x:1", srv.host())]);
    assert!(e.contains("answered 401"), "{e}");
    assert!(
        e.contains("credentials are not sent to another host"),
        "{e}"
    );
    let got = storage.requests();
    assert!(!got.is_empty(), "the redirect was not followed");
    for r in got {
        assert_eq!(r.header("authorization"), None, "{r:?}");
    }
    assert!(!e.contains("secret"));
    assert_eq!(env.image_count(), 0);
}

#[test]
fn a_server_that_hangs_times_out_cleanly() {
    if !need_root() {
        return;
    }
    let srv = serve(fixture(), |req, fx| {
        (req.path == format!("/v2/x/blobs/{}", fx.layer_digest)).then_some(Answer::Hang)
    });
    let env = Env::new();
    let t = std::time::Instant::now();
    let o = env
        .cmd(&["pull", &format!("{}/x:1", srv.host())])
        .env("BERTH_REGISTRY_TIMEOUT", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("timed out") || e.contains("timeout"), "{e}");
    assert!(t.elapsed().as_secs() < 30, "{:?}", t.elapsed());
    assert_eq!(env.image_count(), 0);
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    if !need_root() {
        return;
    }
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    let srv = serve(fixture(), move |req, fx| {
        if req.path != format!("/v2/x/blobs/{}", fx.layer_digest) {
            return None;
        }
        if c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            // The first answer breaks off halfway.
            return Some(Answer::Cut(
                200,
                vec![],
                fx.layer.clone(),
                fx.layer.len() / 2,
            ));
        }
        let range = req.header("range")?;
        let from: usize = range
            .strip_prefix("bytes=")?
            .trim_end_matches('-')
            .parse()
            .ok()?;
        Some(Answer::Full(
            206,
            vec![(
                "Content-Range".into(),
                format!("bytes {from}-{}/{}", fx.layer.len() - 1, fx.layer.len()),
            )],
            fx.layer[from..].to_vec(),
        ))
    });
    let env = Env::new();
    let out = env.ok(&["pull", &format!("{}/x:1", srv.host())]);
    assert!(out.contains("Pull complete"), "{out}");
    let ranged: Vec<_> = srv
        .requests()
        .into_iter()
        .filter_map(|r| r.header("range").map(String::from))
        .collect();
    assert_eq!(ranged.len(), 1, "{ranged:?}");
    assert_ne!(ranged[0], "bytes=0-");
    assert_eq!(env.image_count(), 1);
}

#[test]
fn pull_errors_name_the_problem() {
    if !need_root() {
        return;
    }
    let reg = Registry::plain();
    let env = Env::new();
    let e = env.fails(&["pull", &format!("{}/nope:1", reg.host())]);
    assert!(e.starts_with("Error response from daemon: "), "{e}");
    assert!(e.contains("manifest unknown"), "{e}");
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = env.fails(&["pull", &format!("127.0.0.1:{port}/x:1")]);
    assert!(e.to_lowercase().contains("connect"), "{e}");
    let e = env.fails(&["image", "pull", &format!("{}/nope:2", reg.host())]);
    assert!(e.contains("manifest unknown"), "{e}");
    let e = env.fails(&["image", "push", &format!("{}/notlocal:1", reg.host())]);
    assert!(
        e.contains("An image does not exist locally with the tag"),
        "{e}"
    );
    let e = env.fails(&["push", &format!("{}/notlocal:1", reg.host())]);
    assert!(
        e.contains("An image does not exist locally with the tag"),
        "{e}"
    );
    let o = env.run(&["pull", "--help"]);
    assert!(text(&o.stdout).contains("--platform"));
    let o = env.run(&["push", "--help"]);
    assert!(text(&o.stdout).contains("--all-tags"));
    let o = env.run(&["login", "--help"]);
    assert!(text(&o.stdout).contains("--password-stdin"));
}

#[test]
fn bearer_tokens_are_reused_and_fetched_again_when_refused() {
    if !need_root() {
        return;
    }
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};
    let issued = Arc::new(AtomicUsize::new(0));
    let uses = Arc::new(AtomicUsize::new(0));
    let scopes = Arc::new(Mutex::new(Vec::new()));
    let port = Arc::new(AtomicUsize::new(0));
    let (i, u, sc, p) = (issued.clone(), uses.clone(), scopes.clone(), port.clone());
    let srv = serve(fixture(), move |req, _| {
        if req.path.starts_with("/token?") {
            sc.lock().unwrap().push(req.path.clone());
            // Credentials go to the token realm (same host here).
            assert_eq!(req.header("authorization"), Some("Basic dXNlcjpzZWNyZXQ="));
            let n = i.fetch_add(1, SeqCst) + 1;
            u.store(0, SeqCst);
            let body = format!(r#"{{"token":"T{n}","expires_in":300}}"#);
            return Some(Answer::Full(
                200,
                json_headers("application/json"),
                body.into_bytes(),
            ));
        }
        let want = format!("Bearer T{}", i.load(SeqCst));
        // The current token works for two requests, then "expires".
        let ok = req.header("authorization") == Some(want.as_str()) && u.fetch_add(1, SeqCst) < 2;
        if ok {
            return None;
        }
        let realm = format!("http://127.0.0.1:{}/token", p.load(SeqCst));
        Some(Answer::Full(
            401,
            vec![(
                "WWW-Authenticate".into(),
                format!(r#"Bearer realm="{realm}",service="test-registry""#),
            )],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
        ))
    });
    port.store(srv.port as usize, SeqCst);
    let env = Env::new();
    std::fs::write(
        env.docker.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"dXNlcjpzZWNyZXQ="}}}}}}"#,
            srv.host()
        ),
    )
    .unwrap();
    let out = env.ok(&["pull", &format!("{}/x:1", srv.host())]);
    assert!(out.contains("Pull complete"), "{out}");
    // Manifest and config with the first token (reused), the layer with a
    // second one fetched when the first was refused.
    let scopes = scopes.lock().unwrap().clone();
    assert_eq!(issued.load(SeqCst), 2, "{scopes:?}");
    assert!(
        scopes[0].contains("scope=repository%3Ax%3Apull")
            && scopes[0].contains("service=test-registry"),
        "{scopes:?}"
    );
    let again = env.ok(&["pull", &format!("{}/x:1", srv.host())]);
    assert!(again.contains("Image is up to date"), "{again}");
    assert_eq!(issued.load(SeqCst), 3);
}

#[test]
fn server_errors_and_broken_connections_are_retried() {
    if !need_root() {
        return;
    }
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let manifests = std::sync::Arc::new(AtomicUsize::new(0));
    let configs = std::sync::Arc::new(AtomicUsize::new(0));
    let (m, c) = (manifests.clone(), configs.clone());
    let srv = serve(fixture(), move |req, fx| {
        if req.path.starts_with("/v2/x/manifests/") && m.fetch_add(1, SeqCst) == 0 {
            return Some(Answer::Full(503, vec![], b"busy".to_vec()));
        }
        if req.path == format!("/v2/x/blobs/{}", fx.config_digest) && c.fetch_add(1, SeqCst) == 0 {
            // The connection breaks off in the middle of the body.
            return Some(Answer::Cut(200, vec![], fx.config.clone(), 10));
        }
        None
    });
    let env = Env::new();
    let out = env.ok(&["pull", &format!("{}/x:1", srv.host())]);
    assert!(out.contains("Pull complete"), "{out}");
    assert_eq!(manifests.load(SeqCst), 2);
    assert_eq!(configs.load(SeqCst), 2);
    // A registry that keeps failing: a clear error after the retries.
    let always = serve(fixture(), |req, _| {
        (req.path != "/v2/").then(|| Answer::Full(500, vec![], b"oops".to_vec()))
    });
    let e = env.fails(&["pull", &format!("{}/x:1", always.host())]);
    assert!(e.contains("500"), "{e}");
    let tries = always
        .requests()
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .count();
    assert_eq!(tries, 4, "one try and three retries");
}
