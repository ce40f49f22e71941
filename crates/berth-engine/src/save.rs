//! `save`: images to a tar in the layout Docker ≥ 25 writes, readable by
//! every loader: `manifest.json` (docker-archive) beside `index.json`,
//! `oci-layout` and `blobs/sha256/…` (OCI layout). The bytes of every blob
//! are the stored ones, so digests and image IDs survive a round trip.

use crate::images::{ImageError, ImageStore, Result};
use berth_image::digest::Digest;
use berth_image::manifest::{self, Parsed};
use berth_image::reference;
use oci_spec::image::{Descriptor, MediaType};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;

/// What one image contributes to an archive.
struct Entry {
    manifest: Vec<u8>,
    manifest_digest: Digest,
    config: Digest,
    layers: Vec<Digest>,
    tags: Vec<String>,
}

fn invalid(msg: String) -> ImageError {
    ImageError::Invalid(msg)
}

/// The manifest an image came with, or one made for it: images imported,
/// loaded from a docker-archive or built in have uncompressed layers, each
/// named by its diff ID (a stored blob, or given back from the files).
fn entry_for(store: &mut ImageStore, img: &crate::ImageRecord, tags: Vec<String>) -> Result<Entry> {
    if let Some(md) = &img.manifest_digest {
        let bytes = store
            .blobs
            .read_all(md, manifest::MAX_MANIFEST_SIZE as u64)?;
        if let Parsed::Manifest(m) = manifest::parse(None, &bytes)? {
            let layers = m
                .layers()
                .iter()
                .map(|l| manifest::descriptor_digest(l).map_err(|e| invalid(e.to_string())))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Entry {
                manifest: bytes,
                manifest_digest: md.clone(),
                config: img.id.clone(),
                layers,
                tags,
            });
        }
    }
    let config_bytes = store
        .blobs
        .read_all(&img.id, manifest::MAX_CONFIG_SIZE as u64)?;
    let config = manifest::parse_config(&config_bytes)?;
    let diff_ids = manifest::diff_ids(&config)?;
    let mut descs: Vec<Descriptor> = Vec::new();
    for d in &diff_ids {
        let size = if store.blobs.exists(d) {
            store.blobs.size(d)?
        } else {
            store.layer_tar(d)?.0
        };
        descs.push(manifest::descriptor(MediaType::ImageLayer, d, size)?);
    }
    let cfg_desc =
        manifest::descriptor(MediaType::ImageConfig, &img.id, config_bytes.len() as u64)?;
    let enc = manifest::encode_manifest(&manifest::new_manifest(cfg_desc, descs)?)?;
    Ok(Entry {
        manifest: enc.bytes,
        manifest_digest: enc.digest,
        config: img.id.clone(),
        layers: diff_ids,
        tags,
    })
}

fn header(path: &str, size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_size(size);
    h.set_mtime(0);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

/// Write `names` (names or IDs) to `out` as one archive. `progress` is told
/// each blob as it is written (digest, bytes).
pub fn save(
    store: &mut ImageStore,
    names: &[String],
    out: impl Write,
    mut progress: impl FnMut(&Digest, u64),
) -> Result<()> {
    // One entry per image, with the tags the names gave (as Docker: a name
    // by tag carries that tag, a name by ID none).
    let mut wanted: Vec<(crate::ImageRecord, Vec<String>)> = Vec::new();
    for n in names {
        let img = store.find(n)?;
        let tag = reference::parse(n)
            .ok()
            .map(|r| r.to_string())
            .filter(|t| img.tags.contains(t));
        match wanted.iter_mut().find(|(i, _)| i.id == img.id) {
            Some((_, tags)) => tags.extend(tag.filter(|t| !tags.contains(t))),
            None => wanted.push((img, tag.into_iter().collect())),
        }
    }
    let mut entries = Vec::new();
    for (img, tags) in wanted {
        entries.push(entry_for(store, &img, tags)?);
    }
    let io = |source| ImageError::Io {
        path: "archive".into(),
        source,
    };
    let mut tar = tar::Builder::new(out);
    for d in ["blobs/", "blobs/sha256/"] {
        tar.append(&header(d, 0, true), std::io::empty())
            .map_err(io)?;
    }
    let mut written = BTreeSet::new();
    let mut manifests_in_memory: HashMap<Digest, &[u8]> = HashMap::new();
    for e in &entries {
        manifests_in_memory.insert(e.manifest_digest.clone(), &e.manifest);
    }
    for e in &entries {
        for d in std::iter::once(&e.config)
            .chain(&e.layers)
            .chain(std::iter::once(&e.manifest_digest))
        {
            if !written.insert(d.clone()) {
                continue;
            }
            let path = format!("blobs/{}", d.rel_path().display());
            if let Some(bytes) = manifests_in_memory.get(d) {
                tar.append(&header(&path, bytes.len() as u64, false), *bytes)
                    .map_err(io)?;
                progress(d, bytes.len() as u64);
            } else {
                // A stored blob, or a layer tar given back from its files.
                let (size, r) = store.layer_tar(d)?;
                tar.append(&header(&path, size, false), r).map_err(io)?;
                progress(d, size);
            }
        }
    }
    // docker-archive's manifest.json and the OCI index, naming the same blobs.
    let blob = |d: &Digest| format!("blobs/{}", d.rel_path().display());
    let docker: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "Config": blob(&e.config),
                "RepoTags": e.tags.iter().filter_map(|t| reference::parse(t).ok()).map(|r| r.familiar()).collect::<Vec<_>>(),
                "Layers": e.layers.iter().map(blob).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut index_entries = Vec::new();
    for e in &entries {
        let names: Vec<Option<&String>> = if e.tags.is_empty() {
            vec![None]
        } else {
            e.tags.iter().map(Some).collect()
        };
        for t in names {
            let mut d = serde_json::json!({
                "mediaType": manifest::OCI_MANIFEST,
                "digest": e.manifest_digest.to_string(),
                "size": e.manifest.len(),
            });
            if let Some(t) = t {
                let tag = reference::parse(t)
                    .ok()
                    .and_then(|r| r.tag().map(str::to_string))
                    .unwrap_or_default();
                d["annotations"] = serde_json::json!({
                    "io.containerd.image.name": t,
                    "org.opencontainers.image.ref.name": tag,
                });
            }
            index_entries.push(d);
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": index_entries,
    });
    for (path, value) in [
        ("index.json", index),
        ("manifest.json", serde_json::Value::Array(docker)),
        (
            "oci-layout",
            serde_json::json!({"imageLayoutVersion": "1.0.0"}),
        ),
    ] {
        let bytes = serde_json::to_vec(&value).map_err(|e| invalid(e.to_string()))?;
        tar.append(&header(path, bytes.len() as u64, false), &bytes[..])
            .map_err(io)?;
    }
    tar.into_inner().map_err(io)?.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::need_root;

    #[test]
    fn save_then_load_keeps_ids_and_tags() {
        if !need_root() {
            return;
        }
        let a = tempfile::tempdir().unwrap();
        let mut sa = ImageStore::open(a.path()).unwrap();
        let hello = sa.find("hello-world").unwrap();
        sa.tag("hello-world", "again/hello:2").unwrap();
        let mut buf = Vec::new();
        let mut seen = 0;
        let names = [
            "hello-world".to_string(),
            "again/hello:2".to_string(),
            hello.id.to_string(),
        ];
        save(&mut sa, &names, &mut buf, |_, _| seen += 1).unwrap();
        assert_eq!(seen, 3, "config, layer and manifest");
        let b = tempfile::tempdir().unwrap();
        let mut sb = ImageStore::open(b.path()).unwrap();
        let loaded = crate::archive::load(&mut sb, &buf[..]).unwrap();
        // The OCI index (one entry per tag) is preferred to manifest.json
        // only when there is no manifest.json; here manifest.json is read.
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].image.id, hello.id);
        let mut tags = loaded[0].image.tags.clone();
        tags.sort();
        assert_eq!(
            tags,
            vec![
                "docker.io/again/hello:2",
                "docker.io/library/hello-world:latest"
            ]
        );
        // Deterministic: saving twice gives the same bytes.
        let mut again = Vec::new();
        save(&mut sa, &names, &mut again, |_, _| {}).unwrap();
        assert_eq!(buf, again);
        // By ID alone: no tags travel.
        let mut by_id = Vec::new();
        save(
            &mut sa,
            &[hello.id.hex()[..12].to_string()],
            &mut by_id,
            |_, _| {},
        )
        .unwrap();
        let c = tempfile::tempdir().unwrap();
        let mut sc = ImageStore::open(c.path()).unwrap();
        let loaded = crate::archive::load(&mut sc, &by_id[..]).unwrap();
        assert!(loaded[0].tags.is_empty() && loaded[0].image.tags.is_empty());
        assert!(
            save(&mut sa, &["nosuch".to_string()], Vec::new(), |_, _| {})
                .unwrap_err()
                .is_not_found()
        );
    }
}
