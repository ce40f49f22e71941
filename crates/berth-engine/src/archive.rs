//! `load`: image archives into the store, in one pass over the tar.
//!
//! Accepts docker-archive of every Docker version (`manifest.json` with
//! `<id>/layer.tar` layers, or Docker ≥ 25's `blobs/sha256/…` with
//! symlinks) and OCI layouts (`index.json` + `blobs/`) from podman, buildah
//! or skopeo, gzip- or zstd-compressed or not. Content-addressed entries are
//! streamed into the blob store as they come (each verified against its
//! name); other layer files are stored under the digest of their content;
//! the small JSON documents are kept in memory.

use crate::images::{ImageError, ImageStore, NewImage, NewLayer, Result, Unpacked};
use crate::ImageRecord;
use berth_image::digest::Digest;
use berth_image::layer::{self, ApplyStats};
use berth_image::layers::{LayerStore, PendingLayer};
use berth_image::manifest::{self, Parsed};
use berth_image::reference::{self, Reference};
use berth_image::store::BlobStore;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
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

/// What an archive member turned out to be.
enum Member {
    /// A small document, kept in memory.
    Json(Vec<u8>),
    /// Stored in the blob store (configs, manifests, compressed layers).
    Blob(Digest),
    /// An uncompressed layer tar: unpacked (into the `Unpacked` pool), or
    /// skipped because the store has it already; by its digest (its diff ID).
    Layer(Digest),
}

#[derive(Default)]
struct Members {
    by_path: HashMap<PathBuf, Member>,
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

    fn get(&self, p: &str) -> Option<&Member> {
        self.by_path.get(&self.resolve(p)?)
    }

    fn json(&self, p: &str) -> Option<&[u8]> {
        match self.by_path.get(Path::new(p)) {
            Some(Member::Json(b)) => Some(b),
            _ => None,
        }
    }

    /// The layer a member path names, as `add` takes it.
    fn layer(&self, p: &str) -> Result<(Digest, NewLayer<'static>)> {
        match self.get(p) {
            Some(Member::Blob(d)) => Ok((d.clone(), NewLayer::Blob(d.clone()))),
            Some(Member::Layer(d)) => Ok((d.clone(), NewLayer::Unpacked)),
            _ => Err(invalid(format!("layer {p} is missing"))),
        }
    }

    fn bytes(&self, store: &ImageStore, p: &str) -> Result<Vec<u8>> {
        match self.get(p) {
            Some(Member::Json(b)) => Ok(b.clone()),
            Some(Member::Blob(d)) => Ok(store.blobs.read_all(d, MAX_JSON)?),
            Some(Member::Layer(_)) => Err(invalid(format!("{p} is a layer, not a document"))),
            None => Err(invalid(format!("{p} is missing"))),
        }
    }
}

/// A file member's name, and the digest it claims when it sits under
/// `blobs/<algorithm>/`.
fn claimed_digest(name: &str) -> Result<Option<Digest>> {
    match name.strip_prefix("blobs/") {
        Some(rest) => rest
            .replacen('/', ":", 1)
            .parse()
            .map(Some)
            .map_err(|e| invalid(format!("{name}: {e}"))),
        None => Ok(None),
    }
}

fn is_json_name(name: &str) -> bool {
    name.ends_with(".json") || name == "repositories" || name == "oci-layout"
}

/// Whether the first bytes of a member are those of a tar: a ustar magic,
/// a valid v7 header checksum, or the zero block of an empty archive.
fn looks_like_tar(head: &[u8]) -> bool {
    if head.len() < 512 {
        return false;
    }
    let h = &head[..512];
    if &h[257..262] == b"ustar" || h.iter().all(|&b| b == 0) {
        return true;
    }
    let field = std::str::from_utf8(&h[148..156]).unwrap_or("");
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c: char| c == ' ' || c == '\0'), 8)
    else {
        return false;
    };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == stored
}

/// How one file member is taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Json,
    /// Stored as a blob.
    Blob,
    /// Unpacked as a layer.
    Unpack,
    /// A layer the store (or this load) has already: read and dropped.
    Skip,
}

/// What the store knows before a member is read: whether the layer its
/// name claims is there already.
fn known_layer(store: &ImageStore, claimed: Option<&Digest>, pool: &Unpacked) -> Result<bool> {
    let Some(d) = claimed else { return Ok(false) };
    if pool.contains(d) {
        return Ok(true);
    }
    for cid in store.db.layers_with_diff_id(d)? {
        if store.layers.exists(&cid)
            && berth_image::layer::split::exists(&store.layers.layer_dir(&cid))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The plan for a member from its name and first bytes.
fn plan(name: &str, head: &[u8], known: bool) -> Plan {
    if is_json_name(name) && !name.starts_with("blobs/") {
        return Plan::Json;
    }
    if looks_like_tar(head) {
        return if known { Plan::Skip } else { Plan::Unpack };
    }
    Plan::Blob
}

/// The result of taking in one member.
enum Taken {
    Json(Vec<u8>),
    Blob(Digest),
    Layer(Digest, Option<Box<(PendingLayer, ApplyStats)>>),
}

/// Take in one member's bytes (`head` already read, `rest` after it).
fn take(
    blobs: &BlobStore,
    layers: &LayerStore,
    name: &str,
    claimed: Option<Digest>,
    plan: Plan,
    input: impl Read,
) -> Result<Taken> {
    let io = |source| ImageError::Io {
        path: PathBuf::from(name),
        source,
    };
    Ok(match plan {
        Plan::Json => {
            let mut buf = Vec::new();
            input.take(MAX_JSON + 1).read_to_end(&mut buf).map_err(io)?;
            if buf.len() as u64 > MAX_JSON {
                return Err(invalid(format!("{name} is too large")));
            }
            Taken::Json(buf)
        }
        Plan::Blob => Taken::Blob(blobs.put(claimed.as_ref(), input)?.0),
        Plan::Skip => {
            // Known by the digest its name claims: nothing to keep.
            let d = claimed.ok_or_else(|| invalid(format!("{name}: no digest")))?;
            std::io::copy(&mut { input }, &mut std::io::sink()).map_err(io)?;
            Taken::Layer(d, None)
        }
        Plan::Unpack => {
            let (pending, stats) = crate::images::unpack_layer(layers, input, claimed)
                .map_err(|e| invalid(format!("{name}: {e}")))?;
            Taken::Layer(stats.digest.clone(), Some(Box::new((pending, stats))))
        }
    })
}

fn record(m: &mut Members, pool: &mut Unpacked, path: PathBuf, t: Taken) {
    let member = match t {
        Taken::Json(b) => Member::Json(b),
        Taken::Blob(d) => Member::Blob(d),
        Taken::Layer(d, unpacked) => {
            if let Some(b) = unpacked {
                let (pending, stats) = *b;
                pool.insert(pending, &stats);
            }
            Member::Layer(d)
        }
    };
    m.by_path.insert(path, member);
}

/// A member's link, if it is one.
fn link_of(path: &Path, kind: tar::EntryType, target: Option<&Path>) -> Option<PathBuf> {
    let target = target?;
    let base = if kind.is_symlink() {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        PathBuf::new()
    };
    clean(&base.join(target))
}

/// Read an archive into the store, as a stream (stdin, a pipe, or a
/// compressed archive); returns the images it held.
pub fn load(store: &mut ImageStore, input: impl Read) -> Result<Vec<Loaded>> {
    let _lock = store.content_lock(false)?;
    let (_, plain) = layer::decompressed(input).map_err(|source| ImageError::Io {
        path: PathBuf::from("-"),
        source,
    })?;
    let mut archive = tar::Archive::new(plain);
    let mut m = Members::default();
    let mut pool = Unpacked::default();
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
            let target = entry.link_name().ok().flatten();
            if let Some(t) = link_of(&path, kind, target.as_deref()) {
                m.links.insert(path, t);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let name = path.to_string_lossy().into_owned();
        let claimed = claimed_digest(&name)?;
        let mut head = vec![0u8; 512];
        let n = layer::read_full(&mut entry, &mut head).map_err(io)?;
        head.truncate(n);
        let known = known_layer(store, claimed.as_ref(), &pool)?;
        let p = plan(&name, &head, known);
        let input = std::io::Cursor::new(head).chain(&mut entry);
        let t = take(&store.blobs, &store.layers, &name, claimed, p, input)?;
        record(&mut m, &mut pool, path, t);
    }
    finish(store, &m, &mut pool)
}

/// Read an archive file into the store. An uncompressed archive in a
/// regular file is indexed first, then its members are taken in by
/// several threads at once, each reading its own part of the file; any
/// other input is read as a stream. `progress` is told bytes as they are
/// read.
pub fn load_file(
    store: &mut ImageStore,
    file: File,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Loaded>> {
    let meta = file.metadata().map_err(|source| ImageError::Io {
        path: PathBuf::from("archive"),
        source,
    })?;
    // From where the file is now (stdin may have been read from already).
    let start = std::io::Seek::stream_position(&mut &file).unwrap_or(0);
    let mut magic = [0u8; 4];
    let n = file.read_at(&mut magic, start).unwrap_or(0);
    let compressed = n >= 2 && (magic[..2] == [0x1f, 0x8b] || magic == [0x28, 0xb5, 0x2f, 0xfd]);
    if !meta.is_file() || compressed {
        let reader = Counting {
            inner: std::io::BufReader::with_capacity(1 << 20, file),
            progress,
        };
        return load(store, reader);
    }
    let _lock = store.content_lock(false)?;
    let io = |source| ImageError::Io {
        path: PathBuf::from("archive"),
        source,
    };
    // The index: every member's name, kind and place in the file.
    struct Item {
        path: PathBuf,
        name: String,
        offset: u64,
        size: u64,
    }
    let mut m = Members::default();
    let mut items = Vec::new();
    {
        let mut archive = tar::Archive::new(&file);
        for entry in archive.entries_with_seek().map_err(io)? {
            let entry = entry.map_err(io)?;
            let Some(path) = entry.path().ok().and_then(|p| clean(&p)) else {
                continue;
            };
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry.link_name().ok().flatten();
                if let Some(t) = link_of(&path, kind, target.as_deref()) {
                    m.links.insert(path, t);
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            items.push(Item {
                name: path.to_string_lossy().into_owned(),
                path,
                offset: start + entry.raw_file_position(),
                size: entry.size(),
            });
        }
    }
    // Plans, in the order the members come; the biggest are started first.
    let mut pool = Unpacked::default();
    let mut jobs = Vec::new();
    let mut claimed_layers = std::collections::HashSet::new();
    for (k, it) in items.iter().enumerate() {
        let claimed = claimed_digest(&it.name)?;
        let mut head = vec![0u8; it.size.min(512) as usize];
        file.read_exact_at(&mut head, it.offset).map_err(io)?;
        let mut known = known_layer(store, claimed.as_ref(), &pool)?;
        if let Some(d) = &claimed {
            // A second member with the same content: one unpack is enough.
            known |= looks_like_tar(&head) && !claimed_layers.insert(d.clone());
        }
        jobs.push((k, claimed, plan(&it.name, &head, known)));
    }
    jobs.sort_by_key(|(k, _, _)| std::cmp::Reverse(items[*k].size));
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4)
        .min(jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (blobs, layers) = (&store.blobs, &store.layers);
    // Each layer unpacked is flushed to disk on a thread of its own while
    // the others are still being written, so that the sync before the
    // layers are committed finds little left to do.
    let (flush_tx, flush_rx) = std::sync::mpsc::channel::<()>();
    let (items, jobs, next, file) = (&items, &jobs, &next, &file);
    let results: Vec<(usize, Result<Taken>)> = std::thread::scope(|scope| {
        crate::images::spawn_syncer(scope, layers.dir().to_path_buf(), flush_rx);
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let flush_tx = flush_tx.clone();
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((k, claimed, p)) = jobs.get(j) else {
                            break;
                        };
                        let it = &items[*k];
                        let input = std::io::BufReader::with_capacity(
                            1 << 20,
                            Counting {
                                inner: At {
                                    file,
                                    pos: it.offset,
                                    end: it.offset + it.size,
                                },
                                progress,
                            },
                        );
                        let r = take(blobs, layers, &it.name, claimed.clone(), *p, input);
                        if *p == Plan::Unpack {
                            let _ = flush_tx.send(());
                        }
                        let failed = r.is_err();
                        done.push((*k, r));
                        if failed {
                            // The others stop at their next member.
                            next.store(usize::MAX / 2, std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                    }
                    done
                })
            })
            .collect();
        let r = handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(usize::MAX, Err(invalid("reading the archive panicked")))]
                })
            })
            .collect();
        drop(flush_tx);
        r
    });
    let mut taken = Vec::with_capacity(results.len());
    let mut first_error = None;
    for (k, r) in results {
        match r {
            Ok(t) => taken.push((k, t)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    taken.sort_by_key(|(k, _)| *k);
    for (k, t) in taken {
        record(&mut m, &mut pool, items[k].path.clone(), t);
    }
    finish(store, &m, &mut pool)
}

/// A part of a file, read with pread (so threads share one descriptor).
struct At<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = (self.end - self.pos).min(buf.len() as u64) as usize;
        if left == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..left], self.pos)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A reader that reports what passes through it.
struct Counting<'a, R> {
    inner: R,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// With every member taken in: the images the archive's manifest or index
/// names.
fn finish(store: &mut ImageStore, m: &Members, pool: &mut Unpacked) -> Result<Vec<Loaded>> {
    if m.json("manifest.json").is_some() {
        load_docker(store, m, pool)
    } else if m.json("index.json").is_some() {
        load_oci(store, m, pool)
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
    layers: Vec<NewLayer<'static>>,
    tags: Vec<Reference>,
    pool: &mut Unpacked,
) -> Result<Loaded> {
    let image = store.add(
        NewImage {
            config,
            manifest,
            layers,
            tags: tags.clone(),
        },
        pool,
    )?;
    Ok(Loaded { image, tags })
}

fn load_docker(store: &mut ImageStore, m: &Members, pool: &mut Unpacked) -> Result<Vec<Loaded>> {
    let doc = m.json("manifest.json").unwrap_or_default();
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(doc).map_err(|e| invalid(format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let config = m.bytes(store, &e.config)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            layers.push(m.layer(l)?.1);
        }
        let mut tags = Vec::new();
        for t in e.repo_tags.unwrap_or_default() {
            tags.push(reference::parse(&t)?);
        }
        out.push(add(store, &config, None, layers, tags, pool)?);
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

fn load_oci(store: &mut ImageStore, m: &Members, pool: &mut Unpacked) -> Result<Vec<Loaded>> {
    let index = match manifest::parse(None, m.json("index.json").unwrap_or_default())? {
        Parsed::Index(i) => i,
        Parsed::Manifest(_) => return Err(invalid("index.json is a manifest")),
    };
    let mut out = Vec::new();
    for desc in index.manifests() {
        let tag = oci_name(desc.annotations().as_ref());
        let digest = manifest::descriptor_digest(desc).map_err(|e| invalid(e.to_string()))?;
        let mut bytes = blob_bytes(store, m, &digest, manifest::MAX_MANIFEST_SIZE)?;
        let mut parsed = manifest::parse(Some(desc.media_type().as_ref()), &bytes)?;
        // A multi-platform image in the layout: this host's platform.
        if let Parsed::Index(inner) = &parsed {
            let want = manifest::host_platform();
            let d = manifest::select_platform(inner, &want)
                .ok_or_else(|| invalid(format!("{digest}: no manifest for this platform")))?;
            let d = manifest::descriptor_digest(d).map_err(|e| invalid(e.to_string()))?;
            bytes = blob_bytes(store, m, &d, manifest::MAX_MANIFEST_SIZE)?;
            parsed = manifest::parse(None, &bytes)?;
        }
        let Parsed::Manifest(man) = parsed else {
            return Err(invalid(format!("{digest}: nested indexes")));
        };
        manifest::check_image_manifest(&man)?;
        let config_digest =
            manifest::descriptor_digest(man.config()).map_err(|e| invalid(e.to_string()))?;
        let config = blob_bytes(store, m, &config_digest, manifest::MAX_CONFIG_SIZE)?;
        let mut layers = Vec::new();
        for l in man.layers() {
            let d = manifest::descriptor_digest(l).map_err(|e| invalid(e.to_string()))?;
            layers.push(m.layer(&blob_path(&d))?.1);
        }
        out.push(add(
            store,
            &config,
            Some(&bytes),
            layers,
            tag.into_iter().collect(),
            pool,
        )?);
    }
    Ok(out)
}

/// Where an OCI layout keeps a blob.
fn blob_path(d: &Digest) -> String {
    format!("blobs/{}", d.rel_path().display())
}

/// A document of an OCI layout, by digest.
fn blob_bytes(store: &ImageStore, m: &Members, d: &Digest, limit: usize) -> Result<Vec<u8>> {
    match m.get(&blob_path(d)) {
        Some(Member::Blob(_)) | None => Ok(store.blobs.read_all(d, limit as u64)?),
        Some(Member::Json(b)) => Ok(b.clone()),
        Some(Member::Layer(_)) => Err(invalid(format!("{d} is a layer, not a document"))),
    }
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

    /// A layer tar of one file.
    fn layer_of(name: &str, data: &[u8]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        file(&mut t, name, data);
        t.into_inner().unwrap()
    }

    fn config_of(diff_ids: &[&Digest]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    /// A legacy docker-archive of three images sharing layers at different
    /// places in their chains, one with the same layer twice.
    fn shared_layers_archive() -> (Vec<u8>, Vec<Digest>) {
        let layers = [
            layer_of("a", b"layer a"),
            layer_of("b", &vec![b'b'; 300_000]),
            layer_of("c", b"layer c"),
        ];
        let d: Vec<Digest> = layers.iter().map(|l| Digest::sha256_of(l)).collect();
        let images = [
            (vec![0, 1], "one:1"),
            (vec![1, 2], "two:2"),
            (vec![0, 0], "twice:3"),
        ];
        let mut t = tar::Builder::new(Vec::new());
        for (i, l) in layers.iter().enumerate() {
            file(&mut t, &format!("l{i}/layer.tar"), l);
        }
        let mut mf = Vec::new();
        let mut ids = Vec::new();
        for (k, (ls, tag)) in images.iter().enumerate() {
            let cfg = config_of(&ls.iter().map(|&i| &d[i]).collect::<Vec<_>>());
            ids.push(manifest::image_id(&cfg));
            file(&mut t, &format!("c{k}.json"), &cfg);
            mf.push(
                serde_json::json!({"Config": format!("c{k}.json"), "RepoTags": [tag],
                "Layers": ls.iter().map(|i| format!("l{i}/layer.tar")).collect::<Vec<_>>()}),
            );
        }
        file(
            &mut t,
            "manifest.json",
            serde_json::to_string(&mf).unwrap().as_bytes(),
        );
        (t.into_inner().unwrap(), ids)
    }

    fn temp_file(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        std::io::Seek::rewind(&mut f).unwrap();
        f
    }

    fn load_path(s: &mut ImageStore, bytes: &[u8]) -> Vec<Loaded> {
        load_file(s, temp_file(bytes), &|_| {}).unwrap()
    }

    #[test]
    fn layers_are_stored_once_and_shared_across_chains() {
        if !need_root() {
            return;
        }
        let (bytes, ids) = shared_layers_archive();
        for parallel in [true, false] {
            let (_d, mut s) = store();
            let loaded = if parallel {
                load_path(&mut s, &bytes)
            } else {
                load(&mut s, &bytes[..]).unwrap()
            };
            assert_eq!(
                loaded
                    .iter()
                    .map(|l| l.image.id.clone())
                    .collect::<Vec<_>>(),
                ids
            );
            // No layer blob: only configs are blobs.
            assert_eq!(s.blobs.list().unwrap().len(), 3);
            // Chains a, a+b, b, b+c, a+a: b sits at two places.
            assert_eq!(s.layers.list().unwrap().len(), 5);
            for l in &loaded {
                for cid in &l.image.layers {
                    let dir = s.layers.diff_dir(cid);
                    assert!(std::fs::read_dir(&dir).unwrap().count() == 1, "{cid}");
                }
            }
            // Saved from the unpacked files, loaded elsewhere: same IDs.
            let names = vec!["one:1".to_string(), "two:2".into(), "twice:3".into()];
            let mut saved = Vec::new();
            crate::save::save(&mut s, &names, &mut saved, |_, _| {}).unwrap();
            let (_d2, mut s2) = store();
            let again = load_path(&mut s2, &saved);
            let mut got: Vec<_> = again.iter().map(|l| l.image.id.clone()).collect();
            got.sort();
            let mut want = ids.clone();
            want.sort();
            assert_eq!(got, want);
            // Loading again adds nothing and unpacks nothing.
            let before = s.layers.list().unwrap();
            let reloaded = load_path(&mut s, &saved);
            assert_eq!(reloaded.len(), 3);
            assert_eq!(s.layers.list().unwrap(), before);
            assert!(std::fs::read_dir(s.layers.dir().join(".tmp"))
                .unwrap()
                .next()
                .is_none());
        }
    }

    #[test]
    fn a_layer_that_does_not_match_the_config_stores_nothing() {
        if !need_root() {
            return;
        }
        let (_d, mut s) = store();
        let good = layer_of("a", b"good");
        let bad = layer_of("a", b"evil");
        let cfg = config_of(&[&Digest::sha256_of(&good)]);
        let mut t = tar::Builder::new(Vec::new());
        file(&mut t, "l/layer.tar", &bad);
        file(&mut t, "c.json", &cfg);
        file(
            &mut t,
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["l/layer.tar"]}]"#,
        );
        let f = temp_file(&t.into_inner().unwrap());
        let e = load_file(&mut s, f, &|_| {}).unwrap_err().to_string();
        assert!(e.contains("is missing"), "{e}");
        assert!(s.list().unwrap().is_empty());
        assert!(s.layers.list().unwrap().is_empty());
        assert!(std::fs::read_dir(s.layers.dir().join(".tmp"))
            .unwrap()
            .next()
            .is_none());
        // A blob whose bytes do not match its name, read the parallel way.
        let mut t = tar::Builder::new(Vec::new());
        file(
            &mut t,
            &format!("blobs/sha256/{}", Digest::sha256_of(b"x").hex()),
            &good,
        );
        let f = temp_file(&t.into_inner().unwrap());
        let e = load_file(&mut s, f, &|_| {}).unwrap_err().to_string();
        assert!(e.contains("sha256:"), "{e}");
        assert!(std::fs::read_dir(s.layers.dir().join(".tmp"))
            .unwrap()
            .next()
            .is_none());
        assert!(s.blobs.list().unwrap().is_empty());
    }

    #[test]
    fn gc_removes_layer_directories_without_rows() {
        if !need_root() {
            return;
        }
        let (_d, mut s) = store();
        let (bytes, _) = shared_layers_archive();
        load_path(&mut s, &bytes);
        // A layer committed by a command that died before its rows.
        let orphan = Digest::sha256_of(b"orphan");
        let p = s.layers.prepare(&orphan).unwrap();
        p.commit(berth_image::layers::LayerMeta::new(None, &orphan, 0))
            .unwrap();
        assert!(s.layers.exists(&orphan));
        s.gc().unwrap();
        assert!(!s.layers.exists(&orphan));
        assert_eq!(s.layers.list().unwrap().len(), 5);
    }
}
