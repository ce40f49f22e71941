//! `push`: an image from the store to a registry. The image's own
//! manifest is pushed as it is when its blobs are all here (digests stay
//! what they were); an image with layers kept only unpacked (`import`,
//! `commit`, an uncompressed archive) gets its layers gzip-compressed from
//! their tar split and a new OCI manifest. Blobs the registry has are
//! skipped, blobs of another repository of the same registry are mounted,
//! the rest uploaded in parallel; the manifest goes last.

use crate::images::{ImageError, ImageStore};
use crate::pull::TransferError;
use berth_image::digest::Digest;
use berth_image::manifest::{self, Parsed};
use berth_image::reference::Reference;
use berth_image::store::BlobStore;
use berth_registry::Client;
use oci_spec::image::MediaType;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum PushEvent {
    /// A blob (layer or config) to push, its size; `layer` tells them apart.
    Preparing {
        digest: Digest,
        size: u64,
        layer: bool,
    },
    /// The registry has it.
    Exists(Digest),
    /// Mounted from another repository of the registry.
    Mounted(Digest, String),
    /// Bytes of it sent.
    Progress(Digest, u64),
    /// Uploaded.
    Pushed(Digest),
}

pub struct Pushed {
    pub digest: Digest,
    pub size: usize,
}

struct Plan {
    manifest: Vec<u8>,
    media_type: String,
    /// (digest, size, is a layer)
    blobs: Vec<(Digest, u64, bool)>,
}

fn invalid(msg: impl Into<String>) -> TransferError {
    TransferError::Invalid(msg.into())
}

/// The stored manifest, if the image has one whose blobs are all here.
fn stored_plan(store: &ImageStore, manifest_digest: &Digest) -> Option<Plan> {
    let bytes = store
        .blobs
        .read_all(manifest_digest, manifest::MAX_MANIFEST_SIZE as u64)
        .ok()?;
    let format = manifest::detect(None, &bytes).ok()?;
    let Ok(Parsed::Manifest(m)) = manifest::parse(None, &bytes) else {
        return None;
    };
    let mut blobs = Vec::new();
    for l in m.layers() {
        let d = manifest::descriptor_digest(l).ok()?;
        if !store.blobs.exists(&d) {
            return None;
        }
        blobs.push((d, l.size(), true));
    }
    let c = manifest::descriptor_digest(m.config()).ok()?;
    store.blobs.exists(&c).then_some(())?;
    blobs.push((c, m.config().size(), false));
    Some(Plan {
        manifest: bytes,
        media_type: format.media_type().to_string(),
        blobs,
    })
}

/// A new OCI manifest: layers whose blob is their tar pushed as they are,
/// the others compressed from their tar split into a stored blob.
fn new_plan(store: &ImageStore, id: &Digest) -> Result<Plan, TransferError> {
    let config = store.blobs.read_all(id, manifest::MAX_CONFIG_SIZE as u64)?;
    let cfg = manifest::parse_config(&config)?;
    let mut layers = Vec::new();
    let mut blobs = Vec::new();
    for diff_id in manifest::diff_ids(&cfg)? {
        let (digest, size, media) = if store.blobs.exists(&diff_id) {
            let size = store.blobs.size(&diff_id)?;
            (diff_id.clone(), size, MediaType::ImageLayer)
        } else {
            let (_, tar) = store.layer_tar(&diff_id)?;
            let gz = flate2::read::GzEncoder::new(tar, flate2::Compression::fast());
            let (d, size) = store.blobs.put(None, gz)?;
            (d, size, MediaType::ImageLayerGzip)
        };
        layers.push(manifest::descriptor(media, &digest, size)?);
        blobs.push((digest, size, true));
    }
    let config_desc = manifest::descriptor(MediaType::ImageConfig, id, config.len() as u64)?;
    blobs.push((id.clone(), config.len() as u64, false));
    let encoded = manifest::encode_manifest(&manifest::new_manifest(config_desc, layers)?)?;
    Ok(Plan {
        manifest: encoded.bytes,
        media_type: manifest::OCI_MANIFEST.to_string(),
        blobs,
    })
}

/// Push the image `r` names (a tag) to `r`'s repository.
pub fn push(
    store: &mut ImageStore,
    client: &Arc<Client>,
    r: &Reference,
    uploads: usize,
    events: &(dyn Fn(PushEvent) + Sync),
) -> Result<Pushed, TransferError> {
    let img = store.find_stored(&r.to_string()).map_err(|e| match e {
        ImageError::NotFound(_) => invalid(format!(
            "An image does not exist locally with the tag: {}",
            r.familiar_repository()
        )),
        e => e.into(),
    })?;
    // Held while blobs are read (a blob compressed here for this push is
    // referenced by no image: GC waits until the push is done).
    let _lock = store.content_lock(false)?;
    let plan = {
        match img
            .manifest_digest
            .as_ref()
            .and_then(|d| stored_plan(store, d))
        {
            Some(p) => p,
            None => new_plan(store, &img.id)?,
        }
    };
    let repo = r.path();
    // Other repositories of this registry the image is tagged in.
    let mut sources: Vec<String> = Vec::new();
    for t in &img.tags {
        if let Ok(other) = berth_image::reference::parse(t) {
            if other.domain() == r.domain() && other.path() != repo {
                sources.push(other.path().to_string());
            }
        }
    }
    sources.dedup();
    for (d, size, layer) in &plan.blobs {
        events(PushEvent::Preparing {
            digest: d.clone(),
            size: *size,
            layer: *layer,
        });
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let blobs = &store.blobs;
    let workers = uploads.clamp(1, 16).min(plan.blobs.len().max(1));
    let errors: Vec<TransferError> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut errs = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some((d, size, _)) = plan.blobs.get(k) else {
                            break;
                        };
                        if let Err(e) = push_blob(client, blobs, repo, &sources, d, *size, events) {
                            failed.store(true, Ordering::Relaxed);
                            errs.push(e);
                        }
                    }
                    errs
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![invalid("an upload thread panicked")])
            })
            .collect()
    });
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let tag = r.tag().unwrap_or("latest");
    let digest = client.put_manifest(repo, tag, &plan.media_type, &plan.manifest)?;
    Ok(Pushed {
        digest,
        size: plan.manifest.len(),
    })
}

fn push_blob(
    client: &Client,
    blobs: &BlobStore,
    repo: &str,
    sources: &[String],
    d: &Digest,
    size: u64,
    events: &(dyn Fn(PushEvent) + Sync),
) -> Result<(), TransferError> {
    if client.blob_exists(repo, d)? {
        events(PushEvent::Exists(d.clone()));
        return Ok(());
    }
    for from in sources {
        if client.mount_blob(repo, from, d)? {
            events(PushEvent::Mounted(d.clone(), from.clone()));
            return Ok(());
        }
    }
    let open = || -> std::io::Result<Box<dyn Read + Send + '_>> {
        let f = blobs.open(d).map_err(std::io::Error::other)?;
        Ok(Box::new(Counting {
            inner: f,
            report: Box::new({
                let d = d.clone();
                move |n| events(PushEvent::Progress(d.clone(), n))
            }),
        }))
    };
    client.upload_blob(repo, d, size, &open)?;
    events(PushEvent::Pushed(d.clone()));
    Ok(())
}

struct Counting<'a, R> {
    inner: R,
    report: Box<dyn Fn(u64) + Send + 'a>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            (self.report)(n as u64);
        }
        Ok(n)
    }
}
