//! `load`: image archives into the store, in one pass over the tar.
//!
//! Accepts docker-archive of every Docker version (`manifest.json` with
//! `<id>/layer.tar` layers, or Docker ≥ 25's `blobs/sha256/…` with
//! symlinks) and OCI layouts (`index.json` + `blobs/`) from podman, buildah
//! or skopeo, gzip- or zstd-compressed or not. Content-addressed entries are
//! streamed into the blob store as they come (each verified against its
//! name); other layer files are stored under the digest of their content;
//! the small JSON documents are kept in memory.

use crate::images::{ImageError, ImageStore, NewImage, NewLayer, Result};
use crate::ImageRecord;
use berth_image::digest::Digest;
use berth_image::layer;
use berth_image::manifest::{self, Parsed};
use berth_image::reference::{self, Reference};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The most a JSON document of an archive may weigh.
const MAX_JSON: u64 = 16 << 20;

/// One image an archive held, with the tags it brought.
#[derive(Debug)]
pub struct Loaded {
    pub image: ImageRecord,
    pub tags: Vec<Reference>,
}

fn invalid(msg: impl Into<String>) -> ImageError {
    ImageError::Invalid(format!("invalid image archive: {}", msg.into()))
}

/// An archive member path, normalised ("./a/../b" → "b"); None if it
/// would leave the archive.
fn clean(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[derive(Default)]
struct Members {
    /// Small documents by path.
    json: HashMap<PathBuf, Vec<u8>>,
    /// Stored content by path.
    blobs: HashMap<PathBuf, Digest>,
    /// Symlinks by path → target path (both cleaned).
    links: HashMap<PathBuf, PathBuf>,
}

impl Members {
    fn resolve(&self, p: &str) -> Option<PathBuf> {
        let mut cur = clean(Path::new(p))?;
        for _ in 0..16 {
            match self.links.get(&cur) {
                Some(t) => cur = t.clone(),
                None => return Some(cur),
            }
        }
        None
    }

    fn digest_of(&self, p: &str) -> Option<Digest> {
        let path = self.resolve(p)?;
        self.blobs.get(&path).cloned()
    }

    fn bytes(&self, store: &ImageStore, p: &str) -> Result<Vec<u8>> {
        let path = self
            .resolve(p)
            .ok_or_else(|| invalid(format!("{p}: bad path")))?;
        if let Some(b) = self.json.get(&path) {
            return Ok(b.clone());
        }
        match self.blobs.get(&path) {
            Some(d) => Ok(store.blobs.read_all(d, MAX_JSON)?),
            None => Err(invalid(format!("{p} is missing"))),
        }
    }
}

/// Read an archive into the store; returns the images it held.
pub fn load(store: &mut ImageStore, input: impl Read) -> Result<Vec<Loaded>> {
    let (_, plain) = layer::decompressed(input).map_err(|source| ImageError::Io {
        path: PathBuf::from("-"),
        source,
    })?;
    let mut archive = tar::Archive::new(plain);
    let mut m = Members::default();
    let io = |source| ImageError::Io {
        path: PathBuf::from("archive"),
        source,
    };
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let Some(path) = entry.path().ok().and_then(|p| clean(&p)) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().ok().flatten() {
                let base = if kind.is_symlink() {
                    path.parent().map(Path::to_path_buf).unwrap_or_default()
                } else {
                    PathBuf::new()
                };
                if let Some(t) = clean(&base.join(target)) {
                    m.links.insert(path, t);
                }
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let name = path.to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("blobs/") {
            let digest: Digest = rest
                .replacen('/', ":", 1)
                .parse()
                .map_err(|e| invalid(format!("{name}: {e}")))?;
            store.blobs.put(Some(&digest), &mut entry)?;
            m.blobs.insert(path, digest);
        } else if name.ends_with(".json") || name == "repositories" || name == "oci-layout" {
            if entry.header().size().unwrap_or(0) > MAX_JSON {
                return Err(invalid(format!("{name} is too large")));
            }
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(io)?;
            m.json.insert(path, buf);
        } else {
            let (digest, _) = store.blobs.put(None, &mut entry)?;
            m.blobs.insert(path, digest);
        }
    }
    if m.json.contains_key(Path::new("manifest.json")) {
        load_docker(store, &m)
    } else if m.json.contains_key(Path::new("index.json")) {
        load_oci(store, &m)
    } else {
        Err(invalid("it has neither manifest.json nor index.json"))
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn add(
    store: &mut ImageStore,
    config: &[u8],
    manifest: Option<&[u8]>,
    layers: Vec<Digest>,
    tags: Vec<Reference>,
) -> Result<Loaded> {
    let mut readers = Vec::with_capacity(layers.len());
    for d in layers {
        let f = store.blobs.open(&d)?;
        readers.push(NewLayer {
            digest: Some(d),
            reader: Box::new(f),
        });
    }
    let image = store.add(NewImage {
        config,
        manifest,
        layers: readers,
        tags: tags.clone(),
    })?;
    Ok(Loaded { image, tags })
}

fn load_docker(store: &mut ImageStore, m: &Members) -> Result<Vec<Loaded>> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(&m.json[Path::new("manifest.json")])
        .map_err(|e| invalid(format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let config = m.bytes(store, &e.config)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            layers.push(
                m.digest_of(l)
                    .ok_or_else(|| invalid(format!("layer {l} is missing")))?,
            );
        }
        let mut tags = Vec::new();
        for t in e.repo_tags.unwrap_or_default() {
            tags.push(reference::parse(&t)?);
        }
        out.push(add(store, &config, None, layers, tags)?);
    }
    Ok(out)
}

/// An image name from an OCI index entry's annotations.
fn oci_name(annotations: Option<&HashMap<String, String>>) -> Option<Reference> {
    let a = annotations?;
    if let Some(n) = a.get("io.containerd.image.name") {
        return reference::parse(n).ok();
    }
    let n = a.get("org.opencontainers.image.ref.name")?;
    // A full reference, or just a tag (as skopeo writes): only the former
    // names an image.
    if n.contains('/') || n.contains(':') {
        reference::parse(n).ok()
    } else {
        None
    }
}

fn load_oci(store: &mut ImageStore, m: &Members) -> Result<Vec<Loaded>> {
    let index = match manifest::parse(None, &m.json[Path::new("index.json")])? {
        Parsed::Index(i) => i,
        Parsed::Manifest(_) => return Err(invalid("index.json is a manifest")),
    };
    let mut out = Vec::new();
    for desc in index.manifests() {
        let tag = oci_name(desc.annotations().as_ref());
        let digest = manifest::descriptor_digest(desc).map_err(|e| invalid(e.to_string()))?;
        let mut bytes = store
            .blobs
            .read_all(&digest, manifest::MAX_MANIFEST_SIZE as u64)?;
        let mut parsed = manifest::parse(Some(desc.media_type().as_ref()), &bytes)?;
        // A multi-platform image in the layout: this host's platform.
        if let Parsed::Index(inner) = &parsed {
            let want = manifest::host_platform();
            let d = manifest::select_platform(inner, &want)
                .ok_or_else(|| invalid(format!("{digest}: no manifest for this platform")))?;
            let d = manifest::descriptor_digest(d).map_err(|e| invalid(e.to_string()))?;
            bytes = store
                .blobs
                .read_all(&d, manifest::MAX_MANIFEST_SIZE as u64)?;
            parsed = manifest::parse(None, &bytes)?;
        }
        let Parsed::Manifest(man) = parsed else {
            return Err(invalid(format!("{digest}: nested indexes")));
        };
        manifest::check_image_manifest(&man)?;
        let config_digest =
            manifest::descriptor_digest(man.config()).map_err(|e| invalid(e.to_string()))?;
        let config = store
            .blobs
            .read_all(&config_digest, manifest::MAX_CONFIG_SIZE as u64)?;
        let layers = man
            .layers()
            .iter()
            .map(|l| manifest::descriptor_digest(l).map_err(|e| invalid(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        out.push(add(
            store,
            &config,
            Some(&bytes),
            layers,
            tag.into_iter().collect(),
        )?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::need_root;

    fn file(t: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, path, data).unwrap();
    }

    fn link(t: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        t.append_link(&mut h, path, target).unwrap();
    }

    fn hello() -> berth_image::builtin::BuiltinImage {
        berth_image::builtin::lookup("docker.io/library/hello-world:latest").unwrap()
    }

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ImageStore::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn legacy_docker_archive() {
        if !need_root() {
            return;
        }
        let h = hello();
        let id = manifest::image_id(&h.config);
        let mut t = tar::Builder::new(Vec::new());
        file(&mut t, &format!("{}.json", id.hex()), &h.config);
        file(&mut t, "0123abcd/layer.tar", &h.layer);
        file(&mut t, "0123abcd/VERSION", b"1.0");
        let mf = serde_json::json!([{"Config": format!("{}.json", id.hex()), "RepoTags": ["old:1"], "Layers": ["0123abcd/layer.tar"]}]);
        file(&mut t, "manifest.json", mf.to_string().as_bytes());
        let (_d, mut s) = store();
        let loaded = load(&mut s, &t.into_inner().unwrap()[..]).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].image.id, id);
        assert_eq!(loaded[0].image.tags, vec!["docker.io/library/old:1"]);
        assert!(s
            .layers
            .diff_dir(&loaded[0].image.layers[0])
            .join("hello")
            .is_file());
    }

    #[test]
    fn docker_25_archive_with_blobs_and_links_gzipped() {
        if !need_root() {
            return;
        }
        let h = hello();
        let id = manifest::image_id(&h.config);
        let layer_d = Digest::sha256_of(&h.layer);
        let mut t = tar::Builder::new(Vec::new());
        file(&mut t, &format!("blobs/sha256/{}", id.hex()), &h.config);
        file(&mut t, &format!("blobs/sha256/{}", layer_d.hex()), &h.layer);
        link(
            &mut t,
            "abcd/layer.tar",
            &format!("../blobs/sha256/{}", layer_d.hex()),
        );
        let mf = serde_json::json!([{"Config": format!("blobs/sha256/{}", id.hex()), "RepoTags": ["new:2", "me/new:3"], "Layers": ["abcd/layer.tar"]}]);
        file(&mut t, "manifest.json", mf.to_string().as_bytes());
        file(
            &mut t,
            "index.json",
            b"{\"schemaVersion\":2,\"manifests\":[]}",
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &t.into_inner().unwrap()).unwrap();
        let (_d, mut s) = store();
        let loaded = load(&mut s, &gz.finish().unwrap()[..]).unwrap();
        assert_eq!(loaded[0].image.id, id);
        assert_eq!(loaded[0].tags.len(), 2);
    }

    #[test]
    fn oci_layout_with_digests_kept() {
        if !need_root() {
            return;
        }
        let h = hello();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &h.layer).unwrap();
        let layer = gz.finish().unwrap();
        let layer_d = Digest::sha256_of(&layer);
        let config_d = manifest::image_id(&h.config);
        let man = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "config": {"mediaType": manifest::OCI_CONFIG, "digest": config_d.to_string(), "size": h.config.len()},
            "layers": [{"mediaType": manifest::OCI_LAYER_GZIP, "digest": layer_d.to_string(), "size": layer.len()}]
        });
        let man = serde_json::to_vec(&man).unwrap();
        let man_d = Digest::sha256_of(&man);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": manifest::OCI_MANIFEST, "digest": man_d.to_string(), "size": man.len(),
                "annotations": {"io.containerd.image.name": "docker.io/library/oci:1", "org.opencontainers.image.ref.name": "1"}}]
        });
        let mut t = tar::Builder::new(Vec::new());
        file(&mut t, "oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}");
        file(&mut t, "index.json", index.to_string().as_bytes());
        for (d, b) in [(&man_d, &man), (&config_d, &h.config), (&layer_d, &layer)] {
            file(&mut t, &format!("blobs/sha256/{}", d.hex()), b);
        }
        let (_d, mut s) = store();
        let loaded = load(&mut s, &t.into_inner().unwrap()[..]).unwrap();
        assert_eq!(loaded[0].image.manifest_digest, Some(man_d.clone()));
        assert_eq!(loaded[0].image.tags, vec!["docker.io/library/oci:1"]);
        assert!(loaded[0].image.blobs.contains(&layer_d));
    }

    #[test]
    fn hostile_archives() {
        if !need_root() {
            return;
        }
        let h = hello();
        let (_d, mut s) = store();
        // A blob whose bytes do not match its name: refused, nothing stored.
        let mut t = tar::Builder::new(Vec::new());
        file(
            &mut t,
            &format!("blobs/sha256/{}", Digest::sha256_of(b"other").hex()),
            &h.config,
        );
        let e = load(&mut s, &t.into_inner().unwrap()[..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256:"), "{e}");
        assert!(s.blobs.list().unwrap().is_empty());
        // A name that is not a digest, and an archive of nothing known.
        let mut t = tar::Builder::new(Vec::new());
        file(&mut t, "blobs/sha256/ZZ-not-hex", b"x");
        let e = load(&mut s, &t.into_inner().unwrap()[..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid digest"), "{e}");
        let mut t = tar::Builder::new(Vec::new());
        file(&mut t, "hello.txt", b"hi");
        let e = load(&mut s, &t.into_inner().unwrap()[..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither manifest.json nor index.json"), "{e}");
        // A manifest.json naming a layer that is not there.
        let mut t = tar::Builder::new(Vec::new());
        file(&mut t, "c.json", &h.config);
        file(
            &mut t,
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["nope/layer.tar"]}]"#,
        );
        let e = load(&mut s, &t.into_inner().unwrap()[..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope/layer.tar"), "{e}");
        assert!(s.list().unwrap().is_empty());
    }
}
