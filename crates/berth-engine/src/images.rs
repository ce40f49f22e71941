//! The image store: blobs, unpacked layers and their database rows, kept
//! consistent. Content is written first and made visible by the database row
//! last, so a process killed at any point leaves only unreferenced content
//! that garbage collection removes.

use crate::db::{Db, DbError, ImageRecord, LayerRecord};
use berth_image::digest::Digest;
use berth_image::layer::{self, ApplyOptions, LayerError};
use berth_image::layers::{LayerError as LayerStoreError, LayerMeta, LayerStore, PendingLayer};
use berth_image::manifest::{self, ManifestError};
use berth_image::reference::{self, Reference, ReferenceError};
use berth_image::store::{BlobStore, StoreError};
use nix::fcntl::{Flock, FlockArg};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Blob(#[from] StoreError),
    #[error(transparent)]
    LayerStore(#[from] LayerStoreError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("{0}")]
    Invalid(String),
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// Whether the caller asked for something wrong (exit 125 / HTTP 400
    /// class) rather than the system failing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ImageError::NotFound(_))
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// One layer of an image being added.
pub enum NewLayer<'a> {
    /// A blob to store as shipped (compressed or not), with its digest when
    /// known; unpacked if its chain is not in the store.
    Stream {
        digest: Option<Digest>,
        reader: Box<dyn Read + 'a>,
    },
    /// A blob in the store already; unpacked if its chain is not.
    Blob(Digest),
    /// No blob: the layer was unpacked ahead (see [`Unpacked`]) or is in
    /// the store already.
    Unpacked,
}

/// An image being added.
pub struct NewImage<'a> {
    /// The config's exact bytes (the image ID is their sha256).
    pub config: &'a [u8],
    /// The manifest's exact bytes, when the image came with one.
    pub manifest: Option<&'a [u8]>,
    pub layers: Vec<NewLayer<'a>>,
    pub tags: Vec<Reference>,
}

pub struct ImageStore {
    pub db: Db,
    pub blobs: BlobStore,
    pub layers: LayerStore,
    root: PathBuf,
}

/// Layers unpacked before the image that uses them is known (while an
/// archive or a tarball streams in), by diff ID. [`ImageStore::add`] takes
/// the ones its image needs; the rest are dropped with it.
#[derive(Default)]
pub struct Unpacked {
    layers: HashMap<Digest, (PendingLayer, u64)>,
}

impl Unpacked {
    /// Unpack `reader` (a layer tar, compressed or not) into the layer
    /// store's temp dir, recording its tar split; returns the stats. A
    /// layer of the same diff ID unpacked already is kept, this one dropped.
    pub fn unpack(
        &mut self,
        layers: &LayerStore,
        reader: impl Read,
        expected_digest: Option<Digest>,
    ) -> Result<layer::ApplyStats> {
        let (pending, stats) = unpack_layer(layers, reader, expected_digest)?;
        self.insert(pending, &stats);
        Ok(stats)
    }

    /// Keep a layer unpacked elsewhere (see [`unpack_layer`]).
    pub fn insert(&mut self, pending: PendingLayer, stats: &layer::ApplyStats) {
        self.layers
            .entry(stats.diff_id.clone())
            .or_insert((pending, stats.data_size));
    }

    pub fn contains(&self, diff_id: &Digest) -> bool {
        self.layers.contains_key(diff_id)
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

/// Unpack a layer stream (compressed or not; `expected_digest` checks the
/// bytes as given) into a fresh temp layer with its tar split, to be
/// committed by [`ImageStore::add`] through [`Unpacked`]. Safe to run for
/// several layers at once.
pub fn unpack_layer(
    layers: &LayerStore,
    reader: impl Read,
    expected_digest: Option<Digest>,
) -> Result<(PendingLayer, layer::ApplyStats)> {
    unpack_pending(layers, reader, expected_digest, None)
}

/// Unpack a layer stream into a fresh temp layer with its tar split.
fn unpack_pending(
    layers: &LayerStore,
    reader: impl Read,
    expected_digest: Option<Digest>,
    expected_diff_id: Option<&Digest>,
) -> Result<(PendingLayer, layer::ApplyStats)> {
    // Named by a placeholder until the chain it belongs to is known.
    let placeholder = expected_diff_id
        .or(expected_digest.as_ref())
        .cloned()
        .unwrap_or_else(|| Digest::sha256_of(b"pending"));
    let pending = layers.prepare(&placeholder)?;
    let opts = ApplyOptions {
        expected_diff_id: expected_diff_id.cloned(),
        expected_digest,
        allow_devices: true,
        // One syncfs for all of them when they are committed.
        sync: false,
        split: Some(pending.dir().to_path_buf()),
        ..Default::default()
    };
    let input = std::io::BufReader::with_capacity(1 << 20, reader);
    let stats = layer::apply(input, pending.diff_dir(), &opts)?;
    Ok((pending, stats))
}

/// Where the layer at one position of an image comes from.
enum Source {
    /// In the store already (its size).
    Stored(u64),
    /// Unpacked ahead; its data size.
    Ready(PendingLayer, u64),
    /// To unpack from a stored blob.
    Blob(Digest),
    /// To give back from the tar split of an unpacked copy (directory,
    /// diff directory) and unpack again.
    Split(PathBuf, PathBuf),
    /// The same as an earlier position of this image.
    Same(usize),
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// In `scope`, a thread that syncs the file system of `dir` each time it
/// is asked on `rx` (requests that pile up meanwhile share one sync), until
/// every sender is gone: layers finished early are flushed while others are
/// still written, so the sync before their commit has little left to do.
pub(crate) fn spawn_syncer<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    dir: PathBuf,
    rx: std::sync::mpsc::Receiver<()>,
) {
    scope.spawn(move || {
        let Ok(f) = std::fs::File::open(&dir) else {
            return;
        };
        while rx.recv().is_ok() {
            while rx.try_recv().is_ok() {}
            let _ = nix::unistd::syncfs(&f);
        }
    });
}

impl ImageStore {
    /// Open the store under `root` (`--root`), creating it as needed, and
    /// clear temp files a killed process left.
    pub fn open(root: &Path) -> Result<ImageStore> {
        std::fs::create_dir_all(root).map_err(|source| ImageError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let s = ImageStore {
            db: Db::open(root)?,
            blobs: BlobStore::new(root)?,
            layers: LayerStore::new(root)?,
            root: root.to_path_buf(),
        };
        s.blobs.cleanup_temp()?;
        s.layers.cleanup_temp()?;
        crate::containers::clear_trash(root);
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Store an image: blobs, then layers (applied once per chain id and
    /// shared), then the rows that make it visible. Layers come from the
    /// store, from `unpacked`, from blobs, or from the tar split of a copy
    /// unpacked elsewhere in a chain.
    pub fn add(&mut self, img: NewImage<'_>, unpacked: &mut Unpacked) -> Result<ImageRecord> {
        let _lock = self.content_lock(false)?;
        let config = manifest::parse_config(img.config)?;
        manifest::check_config(&config)?;
        let diff_ids = manifest::diff_ids(&config)?;
        if diff_ids.len() != img.layers.len() {
            return Err(ImageError::Invalid(format!(
                "image config lists {} layers but {} were given",
                diff_ids.len(),
                img.layers.len()
            )));
        }
        let id = manifest::image_id(img.config);
        let mut blobs = Vec::new();
        // Layer blobs first (the readers may be one stream, read in order).
        let mut layer_blobs = Vec::with_capacity(diff_ids.len());
        for input in img.layers {
            let blob = match input {
                NewLayer::Stream { digest, reader } => {
                    Some(self.blobs.put(digest.as_ref(), reader)?.0)
                }
                NewLayer::Blob(d) if self.blobs.exists(&d) => Some(d),
                NewLayer::Blob(_) | NewLayer::Unpacked => None,
            };
            if let Some(b) = &blob {
                blobs.push(b.clone());
            }
            layer_blobs.push(blob);
        }
        let chain = berth_image::layers::chain_ids(&diff_ids);
        let mut sources = Vec::with_capacity(chain.len());
        for i in 0..chain.len() {
            let src = self.layer_source(i, &chain, &diff_ids, &layer_blobs, &sources, unpacked)?;
            sources.push(src);
        }
        // Every layer has a source: the documents can be stored.
        blobs.push(self.blobs.put_bytes(Some(&id), img.config)?);
        let manifest_digest = match img.manifest {
            Some(m) => {
                let d = self.blobs.put_bytes(None, m)?;
                blobs.push(d.clone());
                Some(d)
            }
            None => None,
        };
        // Unpack what is missing, in parallel (each layer is a directory of
        // its own), then positions that repeat an earlier one.
        let mut ready: Vec<Option<(PendingLayer, u64)>> = Vec::new();
        let mut sizes = vec![0u64; chain.len()];
        let mut todo = Vec::new();
        for (i, src) in sources.into_iter().enumerate() {
            ready.push(None);
            match src {
                Source::Stored(size) => sizes[i] = size,
                Source::Ready(p, size) => ready[i] = Some((p, size)),
                Source::Same(j) => todo.push((i, Source::Same(j))),
                other => todo.push((i, other)),
            }
        }
        let (first, repeats): (Vec<_>, Vec<_>) = todo
            .into_iter()
            .partition(|(_, s)| !matches!(s, Source::Same(_)));
        for (i, r) in self.unpack_sources(first, &diff_ids, &ready) {
            ready[i] = Some(r?);
        }
        for (i, r) in self.unpack_sources(repeats, &diff_ids, &ready) {
            ready[i] = Some(r?);
        }
        let mut commits = Vec::new();
        let mut positions = Vec::new();
        for (i, r) in ready.into_iter().enumerate() {
            if let Some((mut pending, size)) = r {
                pending.set_chain_id(chain[i].clone());
                let parent = i.checked_sub(1).map(|p| &chain[p]);
                commits.push((pending, LayerMeta::new(parent, &diff_ids[i], size)));
                sizes[i] = size;
                positions.push(i);
            }
        }
        self.layers.commit_all(commits)?;
        for i in positions {
            self.db.put_layer(&LayerRecord {
                chain_id: chain[i].clone(),
                diff_id: diff_ids[i].clone(),
                parent: i.checked_sub(1).map(|p| chain[p].clone()),
                size: sizes[i],
            })?;
        }
        let size = sizes.iter().sum();
        let platform = (config.os().to_string(), config.architecture().to_string());
        let record = ImageRecord {
            id: id.clone(),
            manifest_digest,
            created: config.created().clone().unwrap_or_default(),
            added: now(),
            size,
            os: platform.0,
            architecture: platform.1,
            parent: None,
            layers: chain,
            blobs,
            tags: img.tags.iter().map(Reference::to_string).collect(),
        };
        self.db.put_image(&record)?;
        self.db
            .image(&id)?
            .ok_or_else(|| ImageError::NotFound(id.to_string()))
    }

    /// Where the layer at position `i` comes from (see [`Source`]).
    fn layer_source(
        &self,
        i: usize,
        chain: &[Digest],
        diff_ids: &[Digest],
        layer_blobs: &[Option<Digest>],
        earlier: &[Source],
        unpacked: &mut Unpacked,
    ) -> Result<Source> {
        let (cid, diff_id) = (&chain[i], &diff_ids[i]);
        if let Some(j) = chain[..i].iter().position(|c| c == cid) {
            return Ok(match &earlier[j] {
                Source::Stored(size) => Source::Stored(*size),
                _ => Source::Same(j),
            });
        }
        if let Some(l) = self.db.layer(cid)? {
            if self.layers.exists(cid) {
                return Ok(Source::Stored(l.size));
            }
        }
        if let Some((p, size)) = unpacked.layers.remove(diff_id) {
            return Ok(Source::Ready(p, size));
        }
        if let Some(b) = &layer_blobs[i] {
            return Ok(Source::Blob(b.clone()));
        }
        // The first earlier position with this diff ID that is being
        // unpacked (never itself a repeat).
        if let Some(j) =
            (0..i).find(|&j| diff_ids[j] == *diff_id && !matches!(earlier[j], Source::Stored(_)))
        {
            return Ok(Source::Same(j));
        }
        if let Some((dir, diff)) = self.split_of(diff_id)? {
            return Ok(Source::Split(dir, diff));
        }
        if self.blobs.exists(diff_id) {
            return Ok(Source::Blob(diff_id.clone()));
        }
        Err(ImageError::Invalid(format!(
            "layer {diff_id} is missing: neither its blob nor an unpacked copy is here"
        )))
    }

    /// A committed layer of this diff ID that can give its tar back: its
    /// directory and diff directory.
    fn split_of(&self, diff_id: &Digest) -> Result<Option<(PathBuf, PathBuf)>> {
        for cid in self.db.layers_with_diff_id(diff_id)? {
            let dir = self.layers.layer_dir(&cid);
            if self.layers.exists(&cid) && layer::split::exists(&dir) {
                return Ok(Some((dir.clone(), self.layers.diff_dir(&cid))));
            }
        }
        Ok(None)
    }

    /// The tar of the layer `diff_id` (its size and a stream): its stored
    /// blob when the blob is that tar, or else given back from an unpacked
    /// copy's tar split.
    pub fn layer_tar(&self, diff_id: &Digest) -> Result<(u64, Box<dyn Read + Send>)> {
        if self.blobs.exists(diff_id) {
            return Ok((
                self.blobs.size(diff_id)?,
                Box::new(self.blobs.open(diff_id)?),
            ));
        }
        match self.split_of(diff_id)? {
            Some((dir, diff)) => {
                let (dir, diff): (PathBuf, PathBuf) = (dir, diff);
                let (info, reader) = layer::split::open(&dir, &diff)?;
                Ok((info.size, Box::new(reader)))
            }
            None => Err(ImageError::Invalid(format!(
                "layer {diff_id} can not be given back: neither its blob nor an unpacked copy is here"
            ))),
        }
    }

    /// Unpack layers from their sources, up to four at a time.
    fn unpack_sources(
        &self,
        todo: Vec<(usize, Source)>,
        diff_ids: &[Digest],
        ready: &[Option<(PendingLayer, u64)>],
    ) -> Vec<(usize, Result<(PendingLayer, u64)>)> {
        if todo.is_empty() {
            return Vec::new();
        }
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 4)
            .min(todo.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (layers, blobs) = (&self.layers, &self.blobs);
        let one = |i: usize, src: &Source| -> Result<(PendingLayer, u64)> {
            let diff_id = &diff_ids[i];
            let (p, stats) = match src {
                Source::Blob(d) => {
                    unpack_pending(layers, blobs.open(d)?, Some(d.clone()), Some(diff_id))?
                }
                Source::Split(dir, diff) => {
                    let (_, r) = layer::split::open(dir, diff)?;
                    unpack_pending(layers, r, None, Some(diff_id))?
                }
                Source::Same(j) => {
                    let (p, _) = ready[*j].as_ref().ok_or_else(|| {
                        ImageError::Invalid(format!("layer {diff_id}: no copy to repeat"))
                    })?;
                    let (_, r) = layer::split::open(p.dir(), p.diff_dir())?;
                    unpack_pending(layers, r, None, Some(diff_id))?
                }
                Source::Stored(_) | Source::Ready(..) => {
                    return Err(ImageError::Invalid(format!(
                        "layer {diff_id}: nothing to unpack"
                    )))
                }
            };
            Ok((p, stats.data_size))
        };
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some((i, src)) = todo.get(k) else { break };
                            let r = one(*i, src);
                            let failed = r.is_err();
                            done.push((*i, r));
                            if failed {
                                break;
                            }
                        }
                        done
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![(
                            usize::MAX,
                            Err(ImageError::Invalid("layer unpacking panicked".into())),
                        )]
                    })
                })
                .collect()
        })
    }

    /// The store-wide lock: held shared while content is added (blobs and
    /// layers exist before the rows that reference them), exclusive while
    /// garbage collection looks for content no row references.
    pub fn content_lock(&self, exclusive: bool) -> Result<Flock<File>> {
        let path = self.root.join("content.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| ImageError::Io {
                path: path.clone(),
                source,
            })?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(f, arg).map_err(|(_, e)| ImageError::Io {
            path,
            source: e.into(),
        })
    }

    /// Find an image by name (`busybox`, `user/app:v1`, `name@sha256:…`), by
    /// full ID or by unique ID prefix, as Docker does. A built-in image is
    /// added on first use.
    pub fn find(&mut self, name: &str) -> Result<ImageRecord> {
        self.lookup(name, true)
    }

    /// Like [`find`](Self::find) but only among stored images (for `rmi`:
    /// removing the built-in image must not first add it).
    pub fn find_stored(&mut self, name: &str) -> Result<ImageRecord> {
        self.lookup(name, false)
    }

    fn lookup(&mut self, name: &str, builtin: bool) -> Result<ImageRecord> {
        let not_found = || ImageError::NotFound(name.to_string());
        if let Ok(r) = reference::parse(name) {
            if let Some(id) = self.db.resolve_tag(&r.to_string())? {
                return self.db.image(&id)?.ok_or_else(not_found);
            }
            if let Some(b) = berth_image::builtin::lookup(&r.to_string()).filter(|_| builtin) {
                return self.add(
                    NewImage {
                        config: &b.config,
                        manifest: None,
                        layers: vec![NewLayer::Stream {
                            digest: None,
                            reader: Box::new(&b.layer[..]),
                        }],
                        tags: vec![r],
                    },
                    &mut Unpacked::default(),
                );
            }
        }
        if let Some(hex) = reference::id_hex(name) {
            let found = self.db.images_by_prefix(hex)?;
            match found.as_slice() {
                [one] => return self.db.image(one)?.ok_or_else(not_found),
                [] => {}
                _ => {
                    return Err(ImageError::Invalid(format!(
                        "image ID prefix {name:?} is ambiguous: it matches {} images",
                        found.len()
                    )))
                }
            }
        }
        Err(not_found())
    }

    /// `import`: an image of one layer from a root filesystem tarball
    /// (plain, gzip or zstd), with `changes` applied to its config.
    pub fn import(
        &mut self,
        tarball: impl Read,
        tag: Option<Reference>,
        changes: &[String],
        message: Option<&str>,
    ) -> Result<ImageRecord> {
        let mut cfg = serde_json::Map::new();
        crate::changes::apply(&mut cfg, changes).map_err(|e| ImageError::Invalid(e.to_string()))?;
        // Unpacked as it streams in, once: the tar (its diff ID) can be
        // given back from the files and the split.
        let _lock = self.content_lock(false)?;
        let mut unpacked = Unpacked::default();
        let diff_id = unpacked.unpack(&self.layers, tarball, None)?.diff_id;
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let platform = manifest::host_platform();
        let config = serde_json::json!({
            "architecture": platform.architecture().to_string(),
            "os": "linux",
            "created": created,
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
            "history": [{
                "created": created,
                "comment": message.unwrap_or("Imported from tarball"),
            }],
        });
        let config =
            manifest::canonical_json(&config).map_err(|e| ImageError::Invalid(e.to_string()))?;
        self.add(
            NewImage {
                config: &config,
                manifest: None,
                layers: vec![NewLayer::Unpacked],
                tags: tag.into_iter().collect(),
            },
            &mut unpacked,
        )
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.db.images()?)
    }

    /// `tag SOURCE TARGET`: point the reference `target` at the image
    /// `source` names. Returns the normalised target.
    pub fn tag(&mut self, source: &str, target: &str) -> Result<Reference> {
        let img = self.find(source)?;
        let r = reference::parse(target)?;
        if r.digest().is_some() {
            return Err(ImageError::Invalid(format!(
                "refusing to create a tag with a digest reference: {target}"
            )));
        }
        self.db.tag(&r.to_string(), &img.id)?;
        Ok(r)
    }

    /// `rmi NAME`: a tag of an image with other tags is only untagged;
    /// the last tag (or the ID) removes the image, then whatever content
    /// nothing references any more. An ID naming an image with several
    /// tags needs `force`, as with Docker.
    pub fn remove(&mut self, name: &str, force: bool) -> Result<Vec<Removal>> {
        let img = self.find_stored(name)?;
        let by_tag = reference::parse(name)
            .ok()
            .map(|r| r.to_string())
            .filter(|r| img.tags.contains(r));
        let mut out = Vec::new();
        let users = self.db.containers_using(&img.id.to_string())?;
        if let Some(c) = users.first() {
            let running = users
                .iter()
                .find(|c| matches!(c.state.as_str(), "running" | "paused" | "restarting"));
            let last_tag = by_tag.is_none() || img.tags.len() <= 1;
            match (&by_tag, force, running) {
                (Some(_), false, _) if last_tag => {
                    return Err(ImageError::Conflict(format!(
                        "unable to remove repository reference \"{}\" (must force) - container {} is using its referenced image {}",
                        name, &c.id[..12], img.id.short()
                    )));
                }
                (None, false, _) => {
                    let which = if running.is_some() {
                        "running"
                    } else {
                        "stopped"
                    };
                    return Err(ImageError::Conflict(format!(
                        "unable to delete {} (must be forced) - image is being used by {which} container {}",
                        img.id.short(), &running.unwrap_or(c).id[..12]
                    )));
                }
                (_, true, Some(r)) if last_tag => {
                    return Err(ImageError::Conflict(format!(
                        "unable to delete {} (cannot be forced) - image is being used by running container {}",
                        img.id.short(), &r.id[..12]
                    )));
                }
                (_, true, None) if last_tag => {
                    // Forced with stopped users: untag, keep the image.
                    let tags = match &by_tag {
                        Some(t) => vec![t.clone()],
                        None => img.tags.clone(),
                    };
                    for t in tags {
                        self.db.untag(&t)?;
                        out.push(Removal::Untagged(t));
                    }
                    return Ok(out);
                }
                _ => {}
            }
        }
        if let Some(tag) = &by_tag {
            if img.tags.len() > 1 {
                self.db.untag(tag)?;
                out.push(Removal::Untagged(tag.clone()));
                return Ok(out);
            }
        } else if img.tags.len() > 1 && !force {
            return Err(ImageError::Conflict(format!(
                "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                img.id.short()
            )));
        }
        for t in &img.tags {
            out.push(Removal::Untagged(t.clone()));
        }
        self.db.delete_image(&img.id)?;
        out.push(Removal::Deleted(img.id.clone()));
        out.extend(self.gc()?.into_iter().map(Removal::Deleted));
        Ok(out)
    }

    /// `image prune`: remove untagged images, or with `all` every image
    /// (no container uses one yet). Returns what went and the bytes freed.
    pub fn prune(&mut self, all: bool) -> Result<(Vec<Removal>, u64)> {
        let mut out = Vec::new();
        let mut freed = 0u64;
        for img in self.db.images()? {
            if !all && !img.tags.is_empty() {
                continue;
            }
            if !self.db.containers_using(&img.id.to_string())?.is_empty() {
                continue;
            }
            for t in &img.tags {
                out.push(Removal::Untagged(t.clone()));
            }
            self.db.delete_image(&img.id)?;
            out.push(Removal::Deleted(img.id.clone()));
        }
        for layer in self.db.unreferenced_layers()? {
            if let Some(l) = self.db.layer(&layer)? {
                freed += l.size;
            }
        }
        out.extend(self.gc()?.into_iter().map(Removal::Deleted));
        Ok((out, freed))
    }

    /// Remove layers and blobs no image references; returns the layers'
    /// chain ids. Directories go first, rows last, so a crash in between
    /// leaves rows whose content is gone, which the next run removes.
    pub fn gc(&mut self) -> Result<Vec<Digest>> {
        // No load or import is between writing content and its rows.
        let _lock = self.content_lock(true)?;
        let mut removed = Vec::new();
        loop {
            // A layer becomes unreferenced once its child layer is gone.
            let layers = self.db.unreferenced_layers()?;
            if layers.is_empty() {
                break;
            }
            for l in layers {
                self.layers.remove(&l)?;
                self.db.delete_layer(&l)?;
                removed.push(l);
            }
        }
        for b in self.blobs.list()? {
            if !self.db.blob_referenced(&b)? {
                self.blobs.delete(&b)?;
            }
        }
        // Layer directories without a row: committed by a command that
        // died before writing its rows.
        let known: std::collections::HashSet<Digest> = self.db.layer_ids()?.into_iter().collect();
        for l in self.layers.list()? {
            if !known.contains(&l) {
                self.layers.remove(&l)?;
            }
        }
        Ok(removed)
    }
}

/// One line of what `rmi`/`image prune` did, as Docker prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Untagged(String),
    Deleted(Digest),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::need_root;

    #[test]
    fn builtin_hello_world_is_added_on_first_use_and_shared() {
        if !need_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = ImageStore::open(dir.path()).unwrap();
        assert!(s.list().unwrap().is_empty());
        let img = s.find("hello-world").unwrap();
        assert_eq!(img.tags, vec!["docker.io/library/hello-world:latest"]);
        assert_eq!(img.layers.len(), 1);
        let diff = s.layers.diff_dir(&img.layers[0]).join("hello");
        assert!(diff.is_file(), "{}", diff.display());
        // Second lookup: the same image, not a second copy.
        let again = s.find("docker.io/library/hello-world:latest").unwrap();
        assert_eq!(again.id, img.id);
        assert_eq!(s.list().unwrap().len(), 1);
        // By ID prefix, and a clear miss.
        assert_eq!(s.find(&img.id.hex()[..8]).unwrap().id, img.id);
        let e = s.find("nosuch").unwrap_err();
        assert!(e.is_not_found(), "{e}");
        // A reopened store sees the same image.
        drop(s);
        let mut s = ImageStore::open(dir.path()).unwrap();
        assert_eq!(s.find("hello-world").unwrap().id, img.id);
    }

    #[test]
    fn tag_remove_and_gc() {
        if !need_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = ImageStore::open(dir.path()).unwrap();
        let img = s.find("hello-world").unwrap();
        let t = s.tag("hello-world", "mine/hello:v1").unwrap();
        assert_eq!(t.to_string(), "docker.io/mine/hello:v1");
        assert!(s.tag("hello-world", "Bad/Name").is_err());
        // By ID with two tags: refused without force.
        let e = s.remove(&img.id.hex()[..12], false).unwrap_err();
        assert!(e.to_string().contains("must be forced"), "{e}");
        // By one tag: only untagged.
        let r = s.remove("mine/hello:v1", false).unwrap();
        assert_eq!(r, vec![Removal::Untagged("docker.io/mine/hello:v1".into())]);
        assert!(s.layers.exists(&img.layers[0]));
        // The last tag: image, layer and blobs go.
        let r = s.remove("hello-world", false).unwrap();
        assert!(r.contains(&Removal::Deleted(img.id.clone())), "{r:?}");
        assert!(
            r.contains(&Removal::Deleted(img.layers[0].clone())),
            "{r:?}"
        );
        assert!(!s.layers.exists(&img.layers[0]));
        assert!(s.blobs.list().unwrap().is_empty());
        assert!(s.list().unwrap().is_empty());
        assert!(s
            .remove("hello-world:nope", false)
            .unwrap_err()
            .is_not_found());
        assert!(s.remove("hello-world", false).unwrap_err().is_not_found());
        // Prune: a tagged image stays unless `all`.
        s.find("hello-world").unwrap();
        assert!(s.prune(false).unwrap().0.is_empty());
        let (gone, freed) = s.prune(true).unwrap();
        assert!(gone.contains(&Removal::Deleted(img.id.clone())), "{gone:?}");
        assert!(freed > 7000, "{freed}");
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn import_a_rootfs_tarball() {
        if !need_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = ImageStore::open(dir.path()).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "etc/motd", &b"hi\n"[..]).unwrap();
        let data = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &data).unwrap();
        let gz = gz.finish().unwrap();
        let img = s
            .import(
                &gz[..],
                Some(reference::parse("imported:v1").unwrap()),
                &["CMD [\"/bin/sh\"]".to_string(), "ENV A=1".to_string()],
                Some("from a test"),
            )
            .unwrap();
        assert_eq!(img.tags, vec!["docker.io/library/imported:v1"]);
        let motd = s.layers.diff_dir(&img.layers[0]).join("etc/motd");
        assert_eq!(std::fs::read(motd).unwrap(), b"hi\n");
        let cfg: serde_json::Value =
            serde_json::from_slice(&s.blobs.read_all(&img.id, 1 << 20).unwrap()).unwrap();
        assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
        assert_eq!(cfg["history"][0]["comment"], "from a test");
        // The layer blob is the uncompressed tar: its digest is the diff ID.
        assert_eq!(
            cfg["rootfs"]["diff_ids"][0],
            Digest::sha256_of(&data).to_string()
        );
        let e = s
            .import(&data[..], None, &["FROM x".to_string()], None)
            .unwrap_err();
        assert!(
            e.to_string().contains("FROM is not a valid change command"),
            "{e}"
        );
    }

    #[test]
    fn a_layer_that_does_not_match_its_diff_id_stores_no_image() {
        if !need_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = ImageStore::open(dir.path()).unwrap();
        let b = berth_image::builtin::lookup("docker.io/library/hello-world:latest").unwrap();
        let mut other = b.layer.clone();
        other[600] ^= 1;
        let e = s
            .add(
                NewImage {
                    config: &b.config,
                    manifest: None,
                    layers: vec![NewLayer::Stream {
                        digest: None,
                        reader: Box::new(&other[..]),
                    }],
                    tags: vec![reference::parse("x:y").unwrap()],
                },
                &mut Unpacked::default(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("sha256:"), "{e}");
        assert!(s.list().unwrap().is_empty());
        assert!(s.layers.list().unwrap().is_empty());
    }
}
