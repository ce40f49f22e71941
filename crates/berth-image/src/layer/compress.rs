//! The byte streams around a layer tar: compression sniffing, in-process
//! decompression, hashing and counting on the way in and out, and the
//! bounds that keep a hostile stream from growing without end.

use super::{Compression, MAX_ENTRY_METADATA};
use crate::digest::{Algorithm, Digest, Hasher};
use std::cell::{Cell, RefCell};
use std::io::{self, BufReader, Cursor, Read, Write};
use std::rc::Rc;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Tell the compression of a stream from its first bytes.
pub(super) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(&ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Read up to `buf.len()` bytes, fewer only at end of stream.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The raw input: hashed and counted, remembering whether it failed (so a
/// read error of the source is not mistaken for a decompression error).
pub(super) struct Source<R> {
    inner: R,
    hasher: Option<Hasher>,
    count: u64,
    pub(super) error: Option<io::Error>,
}

impl<R: Read> Source<R> {
    pub(super) fn new(inner: R, algo: Algorithm) -> Self {
        Source {
            inner,
            hasher: Some(Hasher::new(algo)),
            count: 0,
            error: None,
        }
    }

    pub(super) fn count(&self) -> u64 {
        self.count
    }

    pub(super) fn digest(&mut self) -> Option<Digest> {
        self.hasher.take().map(Hasher::finish)
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                if let Some(h) = &mut self.hasher {
                    h.update(&buf[..n]);
                }
                self.count += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                Err(copy)
            }
        }
    }
}

/// The decompressor for a sniffed stream; `head` holds the bytes already
/// read for sniffing.
pub(super) fn decoder<'a, R: Read + 'a>(
    format: Compression,
    head: Vec<u8>,
    rest: R,
) -> io::Result<Box<dyn Read + 'a>> {
    let input = Cursor::new(head).chain(rest);
    Ok(match format {
        Compression::None => Box::new(input),
        // Multi-member: `cat a.gz b.gz` is one stream, as with gzip(1).
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
    })
}

/// Why the uncompressed stream stopped.
#[derive(Debug)]
pub(super) enum Failure {
    /// More than the allowed number of uncompressed bytes.
    TooLarge(u64),
    /// More than [`MAX_ENTRY_METADATA`] bytes between two entries.
    Metadata,
    /// The decompressor (or the source under it) failed.
    Inner(io::Error),
}

/// State shared between the uncompressed stream (owned by the tar reader)
/// and the code driving the tar reader.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    /// True while berth itself reads an entry's data; false while the tar
    /// reader reads headers, PAX records, long names and sparse maps.
    pub(super) in_entry: Cell<bool>,
    /// Bytes read outside entries since the last entry.
    meta: Cell<u64>,
    /// Uncompressed bytes so far.
    pub(super) total: Cell<u64>,
    /// End of the uncompressed stream seen.
    pub(super) eof: Cell<bool>,
    pub(super) failure: RefCell<Option<Failure>>,
    /// Records the stream for giving the tar back later, when asked.
    pub(super) split: RefCell<Option<super::split::Recorder>>,
}

impl StreamState {
    /// Start counting the metadata before the next entry.
    pub(super) fn between_entries(&self) {
        self.in_entry.set(false);
        self.meta.set(0);
    }

    /// Bytes read outside entries since the last entry (the headers of the
    /// current entry, while it is being applied).
    pub(super) fn meta_bytes(&self) -> u64 {
        self.meta.get()
    }

    pub(super) fn take_failure(&self) -> Option<Failure> {
        self.failure.borrow_mut().take()
    }
}

/// The uncompressed tar stream: bounded, hashed (diff_id) and counted.
/// Failures are remembered in the shared state and the tar reader gets a
/// generic error, so the caller can report the real cause.
pub(super) struct Uncompressed<R> {
    inner: BufReader<R>,
    hasher: Option<BackgroundHasher>,
    limit: Option<u64>,
    state: Rc<StreamState>,
}

impl<R: Read> Uncompressed<R> {
    pub(super) fn new(
        inner: R,
        algo: Algorithm,
        limit: Option<u64>,
        state: Rc<StreamState>,
    ) -> Self {
        Uncompressed {
            inner: BufReader::with_capacity(256 << 10, inner),
            hasher: Some(BackgroundHasher::new(algo)),
            limit,
            state,
        }
    }

    pub(super) fn digest(&mut self) -> Option<Digest> {
        self.hasher.take().and_then(BackgroundHasher::finish)
    }

    fn fail(&self, f: Failure) -> io::Error {
        *self.state.failure.borrow_mut() = Some(f);
        io::Error::other("layer stream failed")
    }
}

impl<R: Read> Read for Uncompressed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.state.failure.borrow().is_some() {
            return Err(io::Error::other("layer stream failed"));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.fail(Failure::Inner(e))),
        };
        if n == 0 && !buf.is_empty() {
            self.state.eof.set(true);
        }
        let total = self.state.total.get() + n as u64;
        if let Some(rec) = self.state.split.borrow_mut().as_mut() {
            rec.feed(total - n as u64, &buf[..n]);
        }
        self.state.total.set(total);
        if let Some(limit) = self.limit {
            if total > limit {
                return Err(self.fail(Failure::TooLarge(limit)));
            }
        }
        if !self.state.in_entry.get() {
            let meta = self.state.meta.get() + n as u64;
            self.state.meta.set(meta);
            if meta > MAX_ENTRY_METADATA {
                return Err(self.fail(Failure::Metadata));
            }
        }
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Bytes handed to the hashing thread at a time.
const HASH_CHUNK: usize = 1 << 20;

/// Hashes on a thread of its own, so that hashing the uncompressed stream
/// overlaps with writing the files (sha256 alone is about a third of the
/// time of an apply). Small updates are batched; buffers are recycled.
/// Falls back to hashing inline when no thread can be started.
pub(super) struct BackgroundHasher {
    pending: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    handle: Option<JoinHandle<Digest>>,
    inline: Option<Hasher>,
}

impl BackgroundHasher {
    pub(super) fn new(algo: Algorithm) -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let (back_tx, back_rx) = channel::<Vec<u8>>();
        let spawned = std::thread::Builder::new()
            .name("layer-hash".into())
            .spawn(move || {
                let mut h = Hasher::new(algo);
                for mut buf in rx {
                    h.update(&buf);
                    buf.clear();
                    // The other side may be gone already; the buffer is
                    // then simply dropped.
                    let _ = back_tx.send(buf);
                }
                h.finish()
            });
        match spawned {
            Ok(handle) => BackgroundHasher {
                pending: Vec::with_capacity(2 * HASH_CHUNK),
                tx: Some(tx),
                recycled: back_rx,
                handle: Some(handle),
                inline: None,
            },
            Err(e) => {
                tracing::debug!(error = %e, "hashing inline: no thread");
                BackgroundHasher {
                    pending: Vec::new(),
                    tx: None,
                    recycled: back_rx,
                    handle: None,
                    inline: Some(Hasher::new(algo)),
                }
            }
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.inline {
            h.update(data);
            return;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= HASH_CHUNK {
            self.send();
        }
    }

    fn send(&mut self) {
        let next = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(2 * HASH_CHUNK));
        let full = std::mem::replace(&mut self.pending, next);
        if let Some(tx) = &self.tx {
            if tx.send(full).is_err() {
                // The thread is gone (it panicked): `finish` reports it.
                self.tx = None;
            }
        }
    }

    /// The digest of everything hashed; `None` if the hashing thread died.
    pub(super) fn finish(mut self) -> Option<Digest> {
        if let Some(h) = self.inline.take() {
            return Some(h.finish());
        }
        if !self.pending.is_empty() {
            self.send();
        }
        // Closing the channel ends the thread's loop.
        let tx = self.tx.take()?;
        drop(tx);
        self.handle.take()?.join().ok()
    }
}

/// A writer that hashes (sha256) and counts what goes through it.
pub(super) struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(super) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(Algorithm::Sha256),
            count: 0,
        }
    }

    /// The inner writer, the digest and the byte count.
    pub(super) fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compressor of [`super::diff`]'s output.
pub(super) enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub(super) fn new(format: Compression, level: Option<u32>, out: W) -> io::Result<Self> {
        Ok(match format {
            Compression::None => Encoder::None(out),
            Compression::Gzip => {
                let level = level.map_or(flate2::Compression::default(), |l| {
                    flate2::Compression::new(l.min(9))
                });
                // A zero mtime and no file name in the gzip header keep the
                // output deterministic (flate2's defaults).
                Encoder::Gzip(flate2::write::GzEncoder::new(out, level))
            }
            Compression::Zstd => {
                let level = level.map_or(zstd::DEFAULT_COMPRESSION_LEVEL, |l| {
                    i32::try_from(l.min(22)).unwrap_or(zstd::DEFAULT_COMPRESSION_LEVEL)
                });
                Encoder::Zstd(zstd::stream::write::Encoder::new(out, level)?)
            }
        })
    }

    /// Write the compressed stream's trailer and return the inner writer.
    pub(super) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(sniff(&ZSTD_MAGIC), Compression::Zstd);
        assert_eq!(sniff(b"etc/"), Compression::None);
        assert_eq!(sniff(&[0x1f]), Compression::None);
        assert_eq!(sniff(&[]), Compression::None);
    }

    #[test]
    fn metadata_between_entries_is_bounded() {
        let state = Rc::new(StreamState::default());
        let data = vec![0u8; (MAX_ENTRY_METADATA + 1024) as usize];
        let mut s = Uncompressed::new(&data[..], Algorithm::Sha256, None, state.clone());
        let err = io::copy(&mut s, &mut io::sink()).unwrap_err();
        assert_eq!(err.to_string(), "layer stream failed");
        assert!(matches!(state.take_failure(), Some(Failure::Metadata)));

        let state = Rc::new(StreamState::default());
        state.in_entry.set(true);
        let mut s = Uncompressed::new(&data[..], Algorithm::Sha256, None, state.clone());
        io::copy(&mut s, &mut io::sink()).unwrap();
        assert_eq!(s.digest().unwrap(), Digest::sha256_of(&data));
    }

    #[test]
    fn background_hasher_matches() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = BackgroundHasher::new(Algorithm::Sha256);
        for chunk in data.chunks(777) {
            h.update(chunk);
        }
        h.update(&data[..0]);
        assert_eq!(h.finish().unwrap(), Digest::sha256_of(&data));
        assert_eq!(
            BackgroundHasher::new(Algorithm::Sha256).finish().unwrap(),
            Digest::sha256_of(b"")
        );
    }

    #[test]
    fn total_is_bounded() {
        let state = Rc::new(StreamState::default());
        state.in_entry.set(true);
        let data = vec![1u8; 10_000];
        let mut s = Uncompressed::new(&data[..], Algorithm::Sha256, Some(9_999), state.clone());
        assert!(io::copy(&mut s, &mut io::sink()).is_err());
        assert!(matches!(
            state.take_failure(),
            Some(Failure::TooLarge(9_999))
        ));
    }
}
