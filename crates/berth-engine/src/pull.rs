//! `pull`: an image from a registry into the store, as `load` does from
//! an archive: the manifest (an index resolved to the platform asked for),
//! the config, then the layers the store lacks, downloaded in parallel and
//! each streamed once through digest verification and decompression into
//! its unpacked directory while the compressed bytes are written to a temp
//! blob. The blob becomes visible only once its digest was checked; the
//! image's rows come last ([`ImageStore::add`]).

use crate::images::{unpack_layer, ImageError, ImageStore, NewImage, NewLayer, Unpacked};
use crate::ImageRecord;
use berth_image::digest::Digest;
use berth_image::layers::LayerStore;
use berth_image::layers::PendingLayer;
use berth_image::manifest::{self, Parsed};
use berth_image::reference::Reference;
use berth_image::store::{BlobStore, BlobWriter};
use berth_registry::client::BlobReader;
use berth_registry::{Client, RegistryError};
use oci_spec::image::Platform;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("{0}")]
    Invalid(String),
}

impl From<berth_image::store::StoreError> for TransferError {
    fn from(e: berth_image::store::StoreError) -> Self {
        TransferError::Image(e.into())
    }
}

/// What a pull reports as it goes (the CLI draws it).
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// The layer (by its blob digest) is in the store already.
    Exists(Digest),
    /// The layer will be downloaded (its size).
    Waiting(Digest, u64),
    /// Bytes of the layer received.
    Progress(Digest, u64),
    /// The layer is verified and unpacked.
    Complete(Digest),
}

pub struct PullOptions {
    /// The platform to pick from an index (the host's by default).
    pub platform: Option<Platform>,
    /// Layers downloaded at once.
    pub downloads: usize,
}

pub struct Pulled {
    pub image: ImageRecord,
    /// The digest the reference resolved to (the index's, for an index).
    pub digest: Digest,
    /// Whether the reference pointed at another image (or none) before.
    pub changed: bool,
}

fn invalid(msg: impl Into<String>) -> TransferError {
    TransferError::Invalid(msg.into())
}

/// Pull `r` (a tag or a digest) from the registry `client` speaks to.
pub fn pull(
    store: &mut ImageStore,
    client: &Arc<Client>,
    r: &Reference,
    opts: &PullOptions,
    events: &(dyn Fn(PullEvent) + Sync),
) -> Result<Pulled, TransferError> {
    let repo = r.path();
    let wanted = match r.digest() {
        Some(d) => d.to_string(),
        None => r.tag().unwrap_or("latest").to_string(),
    };
    let (top, content_type) = client.get_manifest(repo, &wanted).map_err(|e| match e {
        RegistryError::NotFound(m) => RegistryError::NotFound(format!(
            "manifest for {} not found: {m}",
            r.familiar()
        )),
        RegistryError::Unauthorized(m) => RegistryError::Unauthorized(format!(
            "pull access denied for {}, repository does not exist or may require 'berth login': {m}",
            r.familiar_repository()
        )),
        other => other,
    })?;
    let top_digest = Digest::sha256_of(&top);
    let (manifest_bytes, parsed) = match manifest::parse(content_type.as_deref(), &top)? {
        Parsed::Manifest(m) => (top, m),
        Parsed::Index(index) => {
            let want = opts
                .platform
                .clone()
                .unwrap_or_else(manifest::host_platform);
            let d = manifest::select_platform(&index, &want).ok_or_else(|| {
                invalid(format!(
                    "no matching manifest for {} in the manifest list entries",
                    manifest::platform_string(&want)
                ))
            })?;
            let digest = manifest::descriptor_digest(d)
                .map_err(|e| invalid(format!("index {top_digest}: {e}")))?;
            let (bytes, ct) = client.get_manifest(repo, &digest.to_string())?;
            let given = ct.or_else(|| Some(d.media_type().to_string()));
            match manifest::parse(given.as_deref(), &bytes)? {
                Parsed::Manifest(m) => (bytes, m),
                Parsed::Index(_) => {
                    return Err(invalid(format!(
                        "manifest {digest}: the index entry for {} is itself an index",
                        manifest::platform_string(&want)
                    )))
                }
            }
        }
    };
    manifest::check_image_manifest(&parsed)?;
    let config_digest = manifest::descriptor_digest(parsed.config())
        .map_err(|e| invalid(format!("manifest config: {e}")))?;
    let config = client.get_blob_bytes(repo, &config_digest, manifest::MAX_CONFIG_SIZE as u64)?;
    let cfg = manifest::parse_config(&config)?;
    manifest::check_config(&cfg)?;
    let diff_ids = manifest::diff_ids(&cfg)?;
    let layers = parsed.layers();
    if diff_ids.len() != layers.len() {
        return Err(manifest::ManifestError::LayerCount {
            diff_ids: diff_ids.len(),
            layers: layers.len(),
        }
        .into());
    }
    let mut digests = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        digests.push(
            manifest::descriptor_digest(l)
                .map_err(|e| invalid(format!("manifest layers[{i}]: {e}")))?,
        );
    }
    let before = store.db.resolve_tag(&r.to_string()).ok().flatten();

    // Content is added under the shared lock (GC waits).
    let _lock = store.content_lock(false)?;
    let chain = berth_image::layers::chain_ids(&diff_ids);
    // What to download: layers whose chain is not stored and whose blob is
    // not here, once per blob digest.
    let mut jobs: Vec<(usize, u64)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..layers.len() {
        let stored = store
            .db
            .layer(&chain[i])
            .map_err(ImageError::from)?
            .is_some()
            && store.layers.exists(&chain[i]);
        if stored || store.blobs.exists(&digests[i]) {
            events(PullEvent::Exists(digests[i].clone()));
            continue;
        }
        if seen.insert(digests[i].clone()) {
            events(PullEvent::Waiting(digests[i].clone(), layers[i].size()));
            jobs.push((i, layers[i].size()));
        }
    }
    let results = download_all(
        &store.blobs,
        &store.layers,
        client,
        repo,
        &jobs,
        &digests,
        &diff_ids,
        opts,
        events,
    );
    let mut unpacked = Unpacked::default();
    let mut first_error = None;
    for r in results {
        match r {
            Ok((pending, stats)) => unpacked.insert(pending, &stats),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let image = store.add(
        NewImage {
            config: &config,
            manifest: Some(&manifest_bytes),
            layers: digests.iter().cloned().map(NewLayer::Blob).collect(),
            tags: vec![r.clone()],
        },
        &mut unpacked,
    )?;
    Ok(Pulled {
        changed: before.as_ref() != Some(&image.id),
        image,
        digest: r.digest().cloned().unwrap_or(top_digest),
    })
}

#[allow(clippy::too_many_arguments)]
fn download_all(
    blobs: &BlobStore,
    layers: &LayerStore,
    client: &Arc<Client>,
    repo: &str,
    jobs: &[(usize, u64)],
    digests: &[Digest],
    diff_ids: &[Digest],
    opts: &PullOptions,
    events: &(dyn Fn(PullEvent) + Sync),
) -> Vec<Result<(PendingLayer, berth_image::layer::ApplyStats), TransferError>> {
    if jobs.is_empty() {
        return Vec::new();
    }
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let workers = opts.downloads.clamp(1, 16).min(jobs.len());
    // Each layer unpacked is flushed to disk on a thread of its own while
    // the others are still coming in, so that the sync before the layers
    // are committed finds little left to do.
    let (flush_tx, flush_rx) = std::sync::mpsc::channel::<()>();
    let (next, failed) = (&next, &failed);
    std::thread::scope(|scope| {
        crate::images::spawn_syncer(scope, layers.dir().to_path_buf(), flush_rx);
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let flush_tx = flush_tx.clone();
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(i, size)) = jobs.get(k) else { break };
                        let r = download_one(
                            blobs,
                            layers,
                            client,
                            repo,
                            &digests[i],
                            &diff_ids[i],
                            size,
                            events,
                        );
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        } else {
                            let _ = flush_tx.send(());
                        }
                        done.push(r);
                    }
                    done
                })
            })
            .collect();
        let r = handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err(invalid("a download thread panicked"))])
            })
            .collect();
        drop(flush_tx);
        r
    })
}

/// Download one layer blob and unpack it in the same pass.
#[allow(clippy::too_many_arguments)]
fn download_one(
    blobs: &BlobStore,
    layers: &LayerStore,
    client: &Arc<Client>,
    repo: &str,
    digest: &Digest,
    diff_id: &Digest,
    size: u64,
    events: &(dyn Fn(PullEvent) + Sync),
) -> Result<(PendingLayer, berth_image::layer::ApplyStats), TransferError> {
    let mut blob = blobs.writer()?;
    let reader = BlobReader::new(client.clone(), repo, digest.clone(), size);
    let tee = Tee {
        inner: reader,
        out: &mut blob,
        report: &|n| events(PullEvent::Progress(digest.clone(), n)),
    };
    let (pending, stats) =
        unpack_layer(layers, tee, Some(digest.clone())).map_err(|e| layer_error(digest, e))?;
    if stats.size != size {
        return Err(invalid(format!(
            "blob {digest}: the registry sent {} bytes, the manifest says {size}",
            stats.size
        )));
    }
    if stats.diff_id != *diff_id {
        return Err(invalid(format!(
            "layer {digest}: its content is {}, the image config says {diff_id}",
            stats.diff_id
        )));
    }
    blob.commit_verified(digest, Some(size))?;
    events(PullEvent::Complete(digest.clone()));
    Ok((pending, stats))
}

fn layer_error(digest: &Digest, e: ImageError) -> TransferError {
    // A broken download surfaces as the layer's read error.
    let msg = e.to_string();
    if msg.contains(&digest.to_string()) {
        TransferError::Image(e)
    } else {
        invalid(format!("layer {digest}: {msg}"))
    }
}

/// Reads through, copying every byte to `out` and reporting counts.
struct Tee<'a, R> {
    inner: R,
    out: &'a mut BlobWriter,
    report: &'a (dyn Fn(u64) + Sync),
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        if n > 0 {
            (self.report)(n as u64);
        }
        Ok(n)
    }
}

/// The tags of a repository (`pull -a`).
pub fn list_tags(client: &Client, repo: &str) -> Result<Vec<String>, TransferError> {
    Ok(client.list_tags(repo)?)
}
