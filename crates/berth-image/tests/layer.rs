//! Layer apply and diff: round trips, compression, whiteouts, and one test
//! per hostile input. Every apply test checks that nothing outside `dest`
//! changed: a canary directory next to `dest` (inside the test's own temp
//! dir) is snapshotted before and compared after.
//!
//! These tests need root (device nodes, chown, trusted.* xattrs). Without
//! root they fail, unless BERTH_SKIP_ROOT_TESTS=1.

use berth_image::digest::Digest;
use berth_image::layer::{
    apply, diff, ApplyOptions, Compression, DiffOptions, IdMap, IdRange, LayerError,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tar::{EntryType, Header};

const MTIME: u64 = 1_600_000_000;

fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("BERTH_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: needs root");
        return false;
    }
    panic!("this test needs root (set BERTH_SKIP_ROOT_TESTS=1 to skip it)");
}

macro_rules! root_test {
    () => {
        if !need_root() {
            return;
        }
    };
}

// ---------------------------------------------------------------------------
// Tar fixtures, written header by header so hostile names get through.

fn pax_data(records: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

struct Tb {
    b: tar::Builder<Vec<u8>>,
}

struct E<'a> {
    name: &'a [u8],
    kind: EntryType,
    data: &'a [u8],
    link: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    dev: (u32, u32),
    pax: Vec<(&'a [u8], &'a [u8])>,
    /// Write a NUL type flag (pre-POSIX "regular file").
    v7: bool,
}

fn e(name: &str, kind: EntryType) -> E<'_> {
    E {
        name: name.as_bytes(),
        kind,
        data: b"",
        link: b"",
        mode: if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        },
        uid: 0,
        gid: 0,
        mtime: MTIME,
        dev: (0, 0),
        pax: Vec::new(),
        v7: false,
    }
}

impl<'a> E<'a> {
    fn data(mut self, d: &'a [u8]) -> Self {
        self.data = d;
        self
    }
    fn link(mut self, l: &'a str) -> Self {
        self.link = l.as_bytes();
        self
    }
    fn mode(mut self, m: u32) -> Self {
        self.mode = m;
        self
    }
    fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    fn mtime(mut self, t: u64) -> Self {
        self.mtime = t;
        self
    }
    fn dev(mut self, major: u32, minor: u32) -> Self {
        self.dev = (major, minor);
        self
    }
    fn v7(mut self) -> Self {
        self.v7 = true;
        self
    }
    fn pax(mut self, k: &'a str, v: &'a [u8]) -> Self {
        self.pax.push((k.as_bytes(), v));
        self
    }
}

fn set_field(field: &mut [u8], v: &[u8]) {
    let n = v.len().min(field.len());
    field[..n].copy_from_slice(&v[..n]);
}

impl Tb {
    fn new() -> Tb {
        Tb {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn raw(&mut self, h: &Header, data: &[u8]) -> &mut Self {
        self.b.append(h, data).unwrap();
        self
    }

    fn add(&mut self, e: E<'_>) -> &mut Self {
        let mut pax = e.pax.clone();
        if e.name.len() > 100 {
            pax.push((b"path", e.name));
        }
        if e.link.len() > 100 {
            pax.push((b"linkpath", e.link));
        }
        if !pax.is_empty() {
            let data = pax_data(&pax);
            let mut h = Header::new_ustar();
            set_field(&mut h.as_old_mut().name, b"././@PaxHeader");
            h.set_entry_type(EntryType::XHeader);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            self.raw(&h, &data);
        }
        let mut h = Header::new_ustar();
        set_field(&mut h.as_old_mut().name, e.name);
        set_field(&mut h.as_old_mut().linkname, e.link);
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        if e.v7 {
            h.as_old_mut().linkflag[0] = 0;
        }
        h.set_cksum();
        self.raw(&h, e.data)
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.add(e(name, EntryType::Regular).data(data))
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.add(e(name, EntryType::Directory))
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.add(e(name, EntryType::Symlink).link(target).mode(0o777))
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.add(e(name, EntryType::Link).link(target))
    }

    /// A GNU sparse file of `real` bytes with the given data chunks.
    fn sparse(&mut self, name: &str, real: u64, chunks: &[(u64, &[u8])]) -> &mut Self {
        assert!(chunks.len() <= 4);
        let mut h = Header::new_gnu();
        set_field(&mut h.as_old_mut().name, name.as_bytes());
        h.set_entry_type(EntryType::GNUSparse);
        h.set_mode(0o640);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        let mut data = Vec::new();
        {
            let g = h.as_gnu_mut().unwrap();
            for (i, (off, d)) in chunks.iter().enumerate() {
                assert_eq!(d.len() % 512, 0);
                g.sparse[i].set_offset(*off);
                g.sparse[i].set_length(d.len() as u64);
                data.extend_from_slice(d);
            }
            g.set_real_size(real);
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.raw(&h, &data)
    }

    /// The archive with its end-of-archive blocks.
    fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }

    /// The archive without its end-of-archive blocks.
    fn unfinished(&self) -> Vec<u8> {
        self.b.get_ref().clone()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).unwrap()
}

// ---------------------------------------------------------------------------
// Snapshots of trees, to compare layers and to prove the host untouched.

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    content: Option<String>,
    target: Option<PathBuf>,
    rdev: u64,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// For files with several links: the first path of the group.
    link_group: Option<PathBuf>,
    /// Allocated bytes, for regular files.
    allocated: u64,
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    }
}

fn xattrs_of(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let names = match berth_sys::xattr::llist(p) {
        Ok(n) => n,
        Err(_) => return out,
    };
    for n in names {
        if let Ok(v) = berth_sys::xattr::lget(p, &n) {
            out.insert(n, v);
        }
    }
    out
}

/// Every path below `root` (relative), except those under `skip`.
fn snapshot(root: &Path, skip: Option<&Path>) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(dir) = stack.pop() {
        for ent in std::fs::read_dir(&dir).unwrap() {
            let p = ent.unwrap().path();
            if Some(p.as_path()) == skip {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
            }
            all.push((p, md));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, md) in all {
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let link_group = if !md.is_dir() && md.nlink() > 1 {
            Some(
                inodes
                    .entry(md.ino())
                    .or_insert_with(|| rel.clone())
                    .clone(),
            )
        } else {
            None
        };
        let content = md
            .is_file()
            .then(|| Digest::sha256_of(&std::fs::read(&p).unwrap()).to_string());
        let target = md.is_symlink().then(|| std::fs::read_link(&p).unwrap());
        out.insert(
            rel,
            Node {
                kind: kind_of(md.file_type()),
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: (md.mtime(), md.mtime_nsec()),
                size: if md.is_dir() { 0 } else { md.len() },
                content,
                target,
                rdev: md.rdev(),
                xattrs: xattrs_of(&p),
                link_group,
                allocated: if md.is_file() { md.blocks() * 512 } else { 0 },
            },
        );
    }
    out
}

/// A test's temp dir: `dest` to apply into and a canary directory beside
/// it that no layer may touch.
struct Env {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    dest: PathBuf,
    canary: PathBuf,
    before: BTreeMap<PathBuf, Node>,
    passwd: (Vec<u8>, u64, u64),
}

fn passwd_state() -> (Vec<u8>, u64, u64) {
    let md = std::fs::metadata("/etc/passwd").unwrap();
    (std::fs::read("/etc/passwd").unwrap(), md.nlink(), md.ino())
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().canonicalize().unwrap();
    let dest = top.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let canary = top.join("canary");
    std::fs::create_dir_all(canary.join("sub")).unwrap();
    std::fs::write(canary.join("file"), b"canary").unwrap();
    std::fs::write(canary.join("sub/deep"), b"deep").unwrap();
    std::os::unix::fs::symlink("file", canary.join("link")).unwrap();
    let before = snapshot(&top, Some(&dest));
    Env {
        _tmp: tmp,
        top,
        dest,
        canary,
        before,
        passwd: passwd_state(),
    }
}

impl Env {
    /// Nothing outside `dest` changed.
    fn check_host(&self) {
        let after = snapshot(&self.top, Some(&self.dest));
        assert_eq!(self.before, after, "something outside dest changed");
        assert_eq!(self.passwd, passwd_state(), "/etc/passwd changed");
        for p in ["/x", "/escape", "/evil", "/abs-escape"] {
            assert!(
                std::fs::symlink_metadata(p).is_err(),
                "{p} appeared on the host"
            );
        }
    }

    fn canary_str(&self) -> String {
        self.canary.to_str().unwrap().to_string()
    }

    /// `dest` joined with an absolute host path, as resolved inside dest.
    fn inside(&self, abs: &Path) -> PathBuf {
        self.dest.join(abs.strip_prefix("/").unwrap())
    }
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        allow_devices: true,
        sync: false,
        ..ApplyOptions::default()
    }
}

fn lmeta(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn is_whiteout(p: &Path) -> bool {
    let md = lmeta(p);
    md.file_type().is_char_device() && md.rdev() == 0
}

// ---------------------------------------------------------------------------
// Round trips.

const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // VFS_CAP_REVISION_2 | effective
    0x00, 0x20, 0x00, 0x00, // permitted: 1 << 13
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn rich_layer() -> Vec<u8> {
    let long_name = format!("deep/{}/file", "n".repeat(120));
    let long_target = format!("/{}", "t".repeat(150));
    let mut zeros_then_x = vec![0u8; 3 << 20];
    zeros_then_x.push(b'x');
    // Every directory is listed (diff writes whole-second mtimes, so an
    // implicitly created parent would not round-trip its nanoseconds).
    let mut t = Tb::new();
    t.dir("deep/")
        .dir(&format!("deep/{}/", "n".repeat(120)))
        .dir("run/")
        .dir("var/")
        .add(e("etc/", EntryType::Directory).mtime(MTIME - 100))
        .add(e("etc/passwd", EntryType::Regular).data(b"root:x:0:0::/root:/bin/sh\n"))
        .add(
            e("bin/", EntryType::Directory)
                .mode(0o755)
                .mtime(MTIME - 50),
        )
        .add(
            e("bin/ping", EntryType::Regular)
                .data(b"\x7fELF ping")
                .mode(0o4755)
                .pax("SCHILY.xattr.security.capability", &CAP_NET_RAW),
        )
        .hardlink("bin/ping6", "bin/ping")
        .hardlink("bin/ping-again", "/bin/ping")
        .add(
            e("srv/", EntryType::Directory)
                .mode(0o2775)
                .owner(1000, 1000)
                .pax("SCHILY.xattr.user.comment", b"hello")
                .pax("SCHILY.xattr.trusted.berth", b"t"),
        )
        .add(
            e("srv/data", EntryType::Regular)
                .data(b"data")
                .mode(0o2640)
                .owner(1000, 50)
                .mtime(MTIME + 7)
                .pax("SCHILY.xattr.user.a", b"1")
                .pax("SCHILY.xattr.user.b", b""),
        )
        .add(e("tmp/", EntryType::Directory).mode(0o1777))
        .add(
            e("big-ids", EntryType::Regular)
                .pax("uid", b"3000000")
                .pax("gid", b"3000001"),
        )
        .symlink("lib", "usr/lib")
        .symlink("abs", "/etc/passwd")
        .symlink("long-link", &long_target)
        .add(e("dev/", EntryType::Directory))
        .add(e("dev/null", EntryType::Char).dev(1, 3).mode(0o666))
        .add(
            e("dev/loop7", EntryType::Block)
                .dev(7, 7)
                .mode(0o660)
                .owner(0, 6),
        )
        .add(e("run/fifo", EntryType::Fifo).mode(0o600).owner(1, 2))
        .add(e(&long_name, EntryType::Regular).data(b"long"))
        .add(e("var/zeros", EntryType::Regular).data(&zeros_then_x))
        .sparse(
            "var/sparse",
            10 << 20,
            // GNU tar ends the map with an empty chunk at the real size.
            &[(0, &[b'a'; 4096]), (8 << 20, &[b'b'; 512]), (10 << 20, &[])],
        )
        .add(
            e("empty/", EntryType::Directory)
                .mode(0o700)
                .mtime(MTIME - 1),
        )
        .add(e("gone/", EntryType::Directory))
        .add(e("gone/.wh.file", EntryType::Regular).owner(3, 4))
        .add(e("opq/", EntryType::Directory))
        .add(e("opq/.wh..wh..opq", EntryType::Regular))
        .file("opq/kept", b"kept");
    t.finish()
}

fn check_rich(dest: &Path) {
    let md = lmeta(&dest.join("bin/ping"));
    assert_eq!(md.mode() & 0o7777, 0o4755);
    assert_eq!(
        berth_sys::xattr::lget(&dest.join("bin/ping"), b"security.capability").unwrap(),
        CAP_NET_RAW
    );
    assert_eq!(lmeta(&dest.join("bin/ping6")).ino(), md.ino());
    assert_eq!(lmeta(&dest.join("bin/ping-again")).ino(), md.ino());
    assert_eq!(md.nlink(), 3);
    let srv = lmeta(&dest.join("srv"));
    assert_eq!(
        (srv.mode() & 0o7777, srv.uid(), srv.gid()),
        (0o2775, 1000, 1000)
    );
    assert_eq!(
        berth_sys::xattr::lget(&dest.join("srv"), b"trusted.berth").unwrap(),
        b"t"
    );
    let data = lmeta(&dest.join("srv/data"));
    assert_eq!(
        (data.mode() & 0o7777, data.uid(), data.gid()),
        (0o2640, 1000, 50)
    );
    assert_eq!(data.mtime() as u64, MTIME + 7);
    assert_eq!(lmeta(&dest.join("tmp")).mode() & 0o7777, 0o1777);
    let big = lmeta(&dest.join("big-ids"));
    assert_eq!((big.uid(), big.gid()), (3_000_000, 3_000_001));
    assert_eq!(
        std::fs::read_link(dest.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    let null = lmeta(&dest.join("dev/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    let lo = lmeta(&dest.join("dev/loop7"));
    assert!(lo.file_type().is_block_device());
    assert_eq!((lo.rdev(), lo.gid()), (nix::sys::stat::makedev(7, 7), 6));
    assert!(lmeta(&dest.join("run/fifo")).file_type().is_fifo());
    let etc = lmeta(&dest.join("etc"));
    assert_eq!(
        etc.mtime() as u64,
        MTIME - 100,
        "directory mtime set after its children"
    );
    assert_eq!(lmeta(&dest.join("empty")).mtime() as u64, MTIME - 1);

    let zeros = lmeta(&dest.join("var/zeros"));
    assert_eq!(zeros.len(), (3 << 20) + 1);
    assert!(zeros.blocks() * 512 <= 64 << 10, "zero blocks stay holes");
    let sparse = lmeta(&dest.join("var/sparse"));
    assert_eq!(sparse.len(), 10 << 20);
    assert!(sparse.blocks() * 512 <= 64 << 10, "sparse holes stay holes");
    let content = std::fs::read(dest.join("var/sparse")).unwrap();
    assert!(content[..4096].iter().all(|b| *b == b'a'));
    assert!(content[4096..8 << 20].iter().all(|b| *b == 0));
    assert!(content[8 << 20..(8 << 20) + 512].iter().all(|b| *b == b'b'));
    assert!(content[(8 << 20) + 512..].iter().all(|b| *b == 0));

    assert!(is_whiteout(&dest.join("gone/file")));
    assert_eq!(lmeta(&dest.join("gone/file")).uid(), 3);
    assert_eq!(
        berth_sys::xattr::lget(&dest.join("opq"), b"trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(std::fs::read(dest.join("opq/kept")).unwrap(), b"kept");
}

#[test]
fn round_trip_keeps_everything() {
    root_test!();
    let env = env();
    let layer = rich_layer();
    let stats = apply(&layer[..], &env.dest, &opts()).unwrap();
    assert_eq!(stats.compression, Compression::None);
    assert_eq!(stats.diff_id, Digest::sha256_of(&layer));
    assert_eq!(stats.digest, stats.diff_id);
    assert_eq!(stats.size, layer.len() as u64);
    check_rich(&env.dest);

    let mut out = Vec::new();
    let d1 = diff(&env.dest, &mut out, &DiffOptions::default()).unwrap();
    assert_eq!(d1.digest, Digest::sha256_of(&out));
    assert_eq!(d1.size, out.len() as u64);

    let dest2 = env.top.join("dest2");
    std::fs::create_dir(&dest2).unwrap();
    let s2 = apply(&out[..], &dest2, &opts()).unwrap();
    assert_eq!(s2.compression, Compression::Gzip);
    assert_eq!(s2.diff_id, d1.diff_id);
    assert_eq!(s2.digest, d1.digest);
    check_rich(&dest2);
    assert_eq!(snapshot(&env.dest, None), snapshot(&dest2, None));

    // Diffing the copy gives the same bytes: the output is deterministic.
    let mut out2 = Vec::new();
    let d2 = diff(&dest2, &mut out2, &DiffOptions::default()).unwrap();
    assert_eq!(d1, d2);
    assert_eq!(out, out2);
    std::fs::remove_dir_all(&dest2).unwrap();
    env.check_host();
}

#[test]
fn plain_gzip_and_zstd_give_the_same_tree() {
    root_test!();
    let env = env();
    let layer = rich_layer();
    let mut trees = Vec::new();
    for (i, (blob, format)) in [
        (layer.clone(), Compression::None),
        (gzip(&layer), Compression::Gzip),
        (zstd(&layer), Compression::Zstd),
    ]
    .into_iter()
    .enumerate()
    {
        let dest = env.dest.join(i.to_string());
        std::fs::create_dir(&dest).unwrap();
        let o = ApplyOptions {
            expected_diff_id: Some(Digest::sha256_of(&layer)),
            expected_digest: Some(Digest::sha256_of(&blob)),
            ..opts()
        };
        let stats = apply(&blob[..], &dest, &o).unwrap();
        assert_eq!(stats.compression, format);
        assert_eq!(stats.uncompressed_size, layer.len() as u64);
        assert_eq!(stats.size, blob.len() as u64);
        trees.push(snapshot(&dest, None));
    }
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[0], trees[2]);

    // And diff writes each compression back.
    for format in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let mut out = Vec::new();
        let o = DiffOptions {
            compression: format,
            ..DiffOptions::default()
        };
        let d = diff(&env.dest.join("0"), &mut out, &o).unwrap();
        assert_eq!(d.digest, Digest::sha256_of(&out));
        let dest = env.dest.join(format!("back-{format}"));
        std::fs::create_dir(&dest).unwrap();
        let s = apply(&out[..], &dest, &opts()).unwrap();
        assert_eq!(s.compression, format);
        assert_eq!(s.diff_id, d.diff_id);
        assert_eq!(snapshot(&dest, None), trees[0]);
    }
    env.check_host();
}

#[test]
fn whiteouts_and_opaque_dirs_become_overlay_form() {
    root_test!();
    let env = env();
    let mut t = Tb::new();
    t.dir("a/")
        .file("a/kept", b"1")
        .file("a/removed", b"2")
        .add(e("a/.wh.removed", EntryType::Regular))
        .add(e("a/.wh.never-existed", EntryType::Regular))
        .add(e(".wh.top", EntryType::Regular))
        .add(e("b/c/.wh..wh..opq", EntryType::Regular))
        .file("b/c/new", b"n")
        .add(e("a/.wh..wh..plnk", EntryType::Regular))
        .add(e("a/.wh..wh.aufs", EntryType::Regular))
        .add(e("x/.wh.y", EntryType::Regular))
        .file("x/y", b"later entry replaces the whiteout")
        // A tar may not forge overlay metadata of its own.
        .add(
            e("forged/", EntryType::Directory)
                .pax("SCHILY.xattr.trusted.overlay.opaque", b"y")
                .pax("SCHILY.xattr.trusted.overlay.redirect", b"/a")
                .pax("SCHILY.xattr.user.overlay.opaque", b"y"),
        );
    let layer = t.finish();
    apply(&layer[..], &env.dest, &opts()).unwrap();
    let d = &env.dest;
    assert_eq!(std::fs::read(d.join("a/kept")).unwrap(), b"1");
    assert!(is_whiteout(&d.join("a/removed")));
    assert!(is_whiteout(&d.join("a/never-existed")));
    assert!(is_whiteout(&d.join("top")));
    assert!(!d.join("a/.wh..wh..plnk").exists());
    assert!(!d.join("a/.wh..wh.aufs").exists());
    assert!(!d.join(".wh.top").exists());
    assert_eq!(
        berth_sys::xattr::lget(&d.join("b/c"), b"trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(std::fs::read(d.join("b/c/new")).unwrap(), b"n");
    assert!(xattrs_of(&d.join("b")).is_empty());
    assert_eq!(
        std::fs::read(d.join("x/y")).unwrap(),
        b"later entry replaces the whiteout"
    );
    assert!(xattrs_of(&d.join("forged")).is_empty());

    // Rootless form: user.overlay.opaque.
    let d2 = env.top.join("d2");
    std::fs::create_dir(&d2).unwrap();
    let o = ApplyOptions {
        userxattr: true,
        sync: true,
        ..opts()
    };
    apply(&layer[..], &d2, &o).unwrap();
    assert_eq!(
        berth_sys::xattr::lget(&d2.join("b/c"), b"user.overlay.opaque").unwrap(),
        b"y"
    );
    assert!(berth_sys::xattr::lget(&d2.join("b/c"), b"trusted.overlay.opaque").is_err());

    // Diff turns them back into .wh. entries, in sorted order.
    let mut out = Vec::new();
    diff(
        &env.dest,
        &mut out,
        &DiffOptions {
            compression: Compression::None,
            ..Default::default()
        },
    )
    .unwrap();
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(&out[..]);
    for ent in ar.entries().unwrap() {
        let ent = ent.unwrap();
        names.push(String::from_utf8(ent.path_bytes().into_owned()).unwrap());
        for x in ent.header().as_ustar().into_iter() {
            assert!(x.uname.iter().all(|b| *b == 0));
        }
    }
    assert_eq!(
        names,
        [
            "a/",
            "a/kept",
            "a/.wh.never-existed",
            "a/.wh.removed",
            "b/",
            "b/c/",
            "b/c/.wh..wh..opq",
            "b/c/new",
            "forged/",
            ".wh.top",
            "x/",
            "x/y",
        ]
    );
    std::fs::remove_dir_all(&d2).unwrap();
    env.check_host();
}

#[test]
fn id_mapping() {
    root_test!();
    let env = env();
    let map = IdMap {
        uids: vec![IdRange {
            container: 0,
            host: 100_000,
            size: 65_536,
        }],
        gids: vec![IdRange {
            container: 0,
            host: 200_000,
            size: 65_536,
        }],
    };
    let mut t = Tb::new();
    t.add(e("f", EntryType::Regular).owner(1000, 7))
        .add(e("d/", EntryType::Directory));
    let layer = t.finish();
    let o = ApplyOptions {
        id_map: map.clone(),
        ..opts()
    };
    apply(&layer[..], &env.dest, &o).unwrap();
    let f = lmeta(&env.dest.join("f"));
    assert_eq!((f.uid(), f.gid()), (101_000, 200_007));
    assert_eq!(lmeta(&env.dest.join("d")).uid(), 100_000);

    let mut out = Vec::new();
    diff(
        &env.dest,
        &mut out,
        &DiffOptions {
            compression: Compression::None,
            id_map: map.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let mut ar = tar::Archive::new(&out[..]);
    let owners: Vec<_> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.header().uid().unwrap(), e.header().gid().unwrap())
        })
        .collect();
    assert_eq!(owners, [(0, 0), (1000, 7)]);

    let mut t = Tb::new();
    t.add(e("f", EntryType::Regular).owner(70_000, 0));
    let d2 = env.top.join("d2");
    std::fs::create_dir(&d2).unwrap();
    let err = apply(&t.finish()[..], &d2, &o).unwrap_err();
    assert!(
        matches!(err, LayerError::Unmapped { id: 70_000, .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&d2).unwrap();
    env.check_host();
}

// ---------------------------------------------------------------------------
// Hostile input: one test each.

#[test]
fn dotdot_and_absolute_names_are_clamped_to_the_root() {
    root_test!();
    let env = env();
    let mut t = Tb::new();
    t.file("../../escape", b"1")
        .file("/abs-escape", b"2")
        .file("a/../../../../evil", b"3")
        .file("../canary/file", b"4")
        .file("./../canary/sub/deep", b"5")
        .dir("../../../")
        .file(&format!("{}/pwned", env.canary_str()), b"6");
    apply(&t.finish()[..], &env.dest, &opts()).unwrap();
    let d = &env.dest;
    assert_eq!(std::fs::read(d.join("escape")).unwrap(), b"1");
    assert_eq!(std::fs::read(d.join("abs-escape")).unwrap(), b"2");
    assert_eq!(std::fs::read(d.join("evil")).unwrap(), b"3");
    assert_eq!(std::fs::read(d.join("canary/file")).unwrap(), b"4");
    assert_eq!(std::fs::read(d.join("canary/sub/deep")).unwrap(), b"5");
    assert_eq!(
        std::fs::read(env.inside(&env.canary).join("pwned")).unwrap(),
        b"6"
    );
    env.check_host();
}

#[test]
fn a_root_entry_that_is_not_a_directory_is_refused() {
    root_test!();
    let env = env();
    let mut t = Tb::new();
    t.file("../", b"x");
    let err = apply(&t.finish()[..], &env.dest, &opts()).unwrap_err();
    assert!(matches!(err, LayerError::InvalidEntry { .. }), "{err}");
    env.check_host();
}

#[test]
fn symlinks_pointing_outside_are_only_data() {
    root_test!();
    let env = env();
    let canary_file = env.canary.join("file");
    let mut t = Tb::new();
    t.symlink("etcp", "/etc/passwd")
        .symlink("up", "../../x")
        .symlink("host", canary_file.to_str().unwrap())
        .symlink("host-rel", "../canary/file")
        // Entries over those symlinks replace them, never write through.
        .file("host", b"overwritten?")
        .dir("host-rel/")
        .symlink("etcp2", "/etc/passwd")
        .add(e("etcp2", EntryType::Regular).data(b"pwned").mode(0o600));
    apply(&t.finish()[..], &env.dest, &opts()).unwrap();
    let d = &env.dest;
    assert_eq!(
        std::fs::read_link(d.join("etcp")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::read_link(d.join("up")).unwrap(),
        Path::new("../../x")
    );
    assert_eq!(std::fs::read(d.join("host")).unwrap(), b"overwritten?");
    assert!(lmeta(&d.join("host-rel")).is_dir());
    assert_eq!(std::fs::read(d.join("etcp2")).unwrap(), b"pwned");
    env.check_host();
}

#[test]
fn hardlink_to_a_host_file_is_refused() {
    root_test!();
    let env = env();
    for target in ["/etc/passwd", "../../../etc/passwd"] {
        let mut t = Tb::new();
        t.hardlink("passwd", target);
        let err = apply(&t.finish()[..], &env.dest, &opts()).unwrap_err();
        assert!(
            matches!(err, LayerError::InvalidEntry { .. }),
            "{target}: {err}"
        );
        assert!(!env.dest.join("passwd").exists());
    }
    env.check_host();
}

#[test]
fn hardlink_climbing_out_of_the_layer_is_refused() {
    root_test!();
    let env = env();
    let canary_file = env.canary.join("file");
    for (i, target) in [
        "../../x",
        "../canary/file",
        canary_file.to_str().unwrap(),
        "via-symlink/file",
        "via-rel-symlink/file",
    ]
    .into_iter()
    .enumerate()
    {
        let dest = env.dest.join(i.to_string());
        std::fs::create_dir(&dest).unwrap();
        let mut t = Tb::new();
        t.symlink("via-symlink", &env.canary_str())
            .symlink("via-rel-symlink", "../canary")
            .hardlink("x", target);
        let err = apply(&t.finish()[..], &dest, &opts()).unwrap_err();
        assert!(
            matches!(err, LayerError::InvalidEntry { .. }),
            "{target}: {err}"
        );
        assert!(std::fs::symlink_metadata(dest.join("x")).is_err());
    }
    assert_eq!(lmeta(&canary_file).nlink(), 1);
    env.check_host();
}

#[test]
fn hardlinks_to_symlinks_link_the_symlink() {
    root_test!();
    let env = env();
    let mut t = Tb::new();
    t.symlink("s", &env.canary.join("file").to_string_lossy())
        .hardlink("h", "s")
        .file("h2-target", b"x")
        .hardlink("dir/h2", "h2-target");
    apply(&t.finish()[..], &env.dest, &opts()).unwrap();
    assert!(lmeta(&env.dest.join("h")).file_type().is_symlink());
    assert_eq!(
        lmeta(&env.dest.join("h")).ino(),
        lmeta(&env.dest.join("s")).ino()
    );
    assert_eq!(std::fs::read(env.dest.join("dir/h2")).unwrap(), b"x");
    env.check_host();
}

#[test]
fn a_file_under_a_symlinked_parent_lands_inside_dest() {
    root_test!();
    let env = env();
    let canary = env.canary_str();
    let mut t = Tb::new();
    // The symlink's target exists inside the layer: the file lands there.
    t.dir(&format!("{canary}/"))
        .symlink("a", &canary)
        .file("a/evil", b"1")
        .dir("a/sub/")
        .file("a/sub/deeper", b"2")
        .symlink("b", "../../../..")
        .file("b/evil2", b"3")
        .symlink("c", "b/../../../tmp")
        .file("c/evil3", b"4");
    apply(&t.finish()[..], &env.dest, &opts()).unwrap();
    let inside = env.inside(&env.canary);
    assert_eq!(std::fs::read(inside.join("evil")).unwrap(), b"1");
    assert_eq!(std::fs::read(inside.join("sub/deeper")).unwrap(), b"2");
    assert_eq!(std::fs::read(env.dest.join("evil2")).unwrap(), b"3");
    assert_eq!(std::fs::read(env.dest.join("tmp/evil3")).unwrap(), b"4");
    env.check_host();
}

#[test]
fn a_file_under_a_dangling_symlinked_parent_is_refused() {
    root_test!();
    let env = env();
    for (i, target) in [
        env.canary_str(),
        "../canary".to_string(),
        "/tmp".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let dest = env.dest.join(i.to_string());
        std::fs::create_dir(&dest).unwrap();
        let mut t = Tb::new();
        t.symlink("a", &target).file("a/evil", b"x");
        let err = apply(&t.finish()[..], &dest, &opts()).unwrap_err();
        assert!(
            matches!(err, LayerError::InvalidEntry { .. }),
            "{target}: {err}"
        );
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            1,
            "only the symlink"
        );
    }
    env.check_host();
}

#[test]
fn whiteouts_through_symlinks_stay_inside() {
    root_test!();
    let env = env();
    let canary = env.canary_str();
    // Dangling in dest: refused, nothing made.
    for name in ["a/.wh.file", "a/.wh..wh..opq", "a/sub/.wh.deep"] {
        let dest = env.top.join("w");
        std::fs::create_dir(&dest).unwrap();
        let mut t = Tb::new();
        t.symlink("a", &canary).add(e(name, EntryType::Regular));
        let err = apply(&t.finish()[..], &dest, &opts()).unwrap_err();
        assert!(
            matches!(err, LayerError::InvalidEntry { .. }),
            "{name}: {err}"
        );
        std::fs::remove_dir_all(&dest).unwrap();
    }
    // Resolvable in dest: the whiteout lands inside.
    let mut t = Tb::new();
    t.dir(&format!("{canary}/"))
        .file(&format!("{canary}/file"), b"in layer")
        .symlink("a", &canary)
        .add(e("a/.wh.file", EntryType::Regular))
        .add(e("a/.wh..wh..opq", EntryType::Regular))
        .symlink("r", "../../canary")
        .add(e("r/.wh.x", EntryType::Regular));
    let err = apply(&t.finish()[..], &env.dest, &opts());
    // `r` resolves to dest/canary, which does not exist: refused.
    assert!(
        matches!(err, Err(LayerError::InvalidEntry { .. })),
        "{err:?}"
    );
    let inside = env.inside(&env.canary);
    assert!(is_whiteout(&inside.join("file")));
    assert_eq!(
        berth_sys::xattr::lget(&inside, b"trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert!(berth_sys::xattr::lget(&env.canary, b"trusted.overlay.opaque").is_err());
    env.check_host();
}

#[test]
fn device_nodes_need_allow_devices() {
    root_test!();
    let env = env();
    let no = ApplyOptions {
        allow_devices: false,
        ..opts()
    };
    for kind in [EntryType::Char, EntryType::Block] {
        let mut t = Tb::new();
        t.add(e("dev/sda", kind).dev(8, 0).mode(0o666));
        let err = apply(&t.finish()[..], &env.dest, &no).unwrap_err();
        assert!(matches!(err, LayerError::DeviceNotAllowed { .. }), "{err}");
        assert!(std::fs::symlink_metadata(env.dest.join("dev/sda")).is_err());
    }
    // Whiteouts and fifos are not devices in this sense.
    let mut t = Tb::new();
    t.add(e("p", EntryType::Fifo))
        .add(e(".wh.w", EntryType::Regular));
    apply(&t.finish()[..], &env.dest, &no).unwrap();
    assert!(lmeta(&env.dest.join("p")).file_type().is_fifo());
    assert!(is_whiteout(&env.dest.join("w")));
    env.check_host();
}

#[test]
fn duplicate_entries_the_later_one_wins() {
    root_test!();
    let env = env();
    let canary_file = env.canary.join("file");
    let mut t = Tb::new();
    t.file("f", b"one")
        .file("f", b"two")
        // dir over file
        .file("x", b"file")
        .add(e("x/", EntryType::Directory).mode(0o711))
        .file("x/child", b"c")
        // file over dir (tree removed)
        .dir("y/")
        .dir("y/sub/")
        .file("y/sub/child", b"c")
        .symlink("y/sub/link", canary_file.to_str().unwrap())
        .file("y", b"now a file")
        // dir over dir: metadata only, children kept
        .add(e("z/", EntryType::Directory).mode(0o700))
        .file("z/child", b"kept")
        .add(e("z/", EntryType::Directory).mode(0o750).owner(5, 6))
        // symlink over dir, hardlink over file
        .dir("s/")
        .symlink("s", "/etc")
        .file("h", b"old")
        .file("target", b"new")
        .hardlink("h", "target")
        // file over a symlink to a host file
        .symlink("via", canary_file.to_str().unwrap())
        .file("via", b"replaced");
    apply(&t.finish()[..], &env.dest, &opts()).unwrap();
    let d = &env.dest;
    assert_eq!(std::fs::read(d.join("f")).unwrap(), b"two");
    assert_eq!(lmeta(&d.join("x")).mode() & 0o7777, 0o711);
    assert_eq!(std::fs::read(d.join("x/child")).unwrap(), b"c");
    assert_eq!(std::fs::read(d.join("y")).unwrap(), b"now a file");
    let z = lmeta(&d.join("z"));
    assert_eq!((z.mode() & 0o7777, z.uid(), z.gid()), (0o750, 5, 6));
    assert_eq!(std::fs::read(d.join("z/child")).unwrap(), b"kept");
    assert_eq!(std::fs::read_link(d.join("s")).unwrap(), Path::new("/etc"));
    assert_eq!(std::fs::read(d.join("h")).unwrap(), b"new");
    assert_eq!(std::fs::read(d.join("via")).unwrap(), b"replaced");
    assert!(lmeta(&d.join("via")).is_file());
    env.check_host();
}

#[test]
fn a_file_as_parent_is_refused() {
    root_test!();
    let env = env();
    let mut t = Tb::new();
    t.file("p", b"file").file("p/child", b"x");
    let err = apply(&t.finish()[..], &env.dest, &opts()).unwrap_err();
    assert!(matches!(err, LayerError::InvalidEntry { .. }), "{err}");
    let mut t = Tb::new();
    t.file("h", b"file").hardlink("h2", "h/x");
    let dest = env.top.join("d2");
    std::fs::create_dir(&dest).unwrap();
    let err = apply(&t.finish()[..], &dest, &opts()).unwrap_err();
    assert!(matches!(err, LayerError::InvalidEntry { .. }), "{err}");
    let mut t = Tb::new();
    t.dir("dir/").hardlink("h", "dir").hardlink("self", "self");
    let err = apply(&t.finish()[..], &dest, &opts()).unwrap_err();
    assert!(matches!(err, LayerError::InvalidEntry { .. }), "{err}");
    std::fs::remove_dir_all(&dest).unwrap();
    env.check_host();
}

#[test]
fn a_truncated_stream_is_an_error() {
    root_test!();
    let env = env();
    let mut t = Tb::new();
    t.file("first", b"1")
        .file("big", &[7u8; 100_000])
        .file("last", b"2");
    let full = t.finish();
    // Cut inside the data of "big", inside a header, and inside the PAX-less
    // header of the last entry.
    for cut in [512 * 3 + 5000, 512 * 2 + 100, full.len() - 1024 - 512 - 200] {
        let dest = env.top.join("t");
        std::fs::create_dir(&dest).unwrap();
        let err = apply(&full[..cut], &dest, &opts()).unwrap_err();
        assert!(
            matches!(err, LayerError::Truncated { .. }),
            "cut {cut}: {err}"
        );
        // And compressed: the decompressor or the tar reader notices.
        let err = apply(&gzip(&full[..cut])[..], &dest, &opts()).unwrap_err();
        assert!(
            matches!(err, LayerError::Truncated { .. }),
            "gz cut {cut}: {err}"
        );
        std::fs::remove_dir_all(&dest).unwrap();
    }
    // Data cut short in entries whose data berth does not use.
    for kind in [
        EntryType::Directory,
        EntryType::Symlink,
        EntryType::XGlobalHeader,
    ] {
        let mut t = Tb::new();
        t.add(e("d/", kind).link("x").data(&[b'x'; 3000]));
        let blob = t.unfinished();
        let dest = env.top.join("t");
        std::fs::create_dir(&dest).unwrap();
        let err = apply(&blob[..512 + 1000], &dest, &opts()).unwrap_err();
        assert!(
            matches!(err, LayerError::Truncated { .. }),
            "{kind:?}: {err}"
        );
        std::fs::remove_dir_all(&dest).unwrap();
    }
    // A cut compressed stream is a decompression error.
    let gz = gzip(&full);
    let zs = zstd(&full);
    for blob in [&gz[..gz.len() - 9], &zs[..zs.len() - 3]] {
        let dest = env.top.join("t");
        std::fs::create_dir(&dest).unwrap();
        let err = apply(blob, &dest, &opts()).unwrap_err();
        assert!(matches!(err, LayerError::Decompress { .. }), "{err}");
        std::fs::remove_dir_all(&dest).unwrap();
    }
    env.check_host();
}

#[test]
fn padding_trailing_data_and_a_missing_end_are_accepted() {
    root_test!();
    let env = env();
    let mut t = Tb::new();
    t.file("f", b"content");
    let unfinished = t.unfinished();
    let full = t.finish();
    let mut padded = full.clone();
    padded.extend_from_slice(&[0u8; 10 * 512 + 17]);
    let mut garbage = full.clone();
    garbage.extend_from_slice(b"this is not a tar header at all, just trailing bytes");
    for (i, blob) in [full, padded, garbage, unfinished].into_iter().enumerate() {
        let dest = env.top.join(format!("p{i}"));
        std::fs::create_dir(&dest).unwrap();
        for b in [blob.clone(), gzip(&blob)] {
            let stats = apply(&b[..], &dest, &opts()).unwrap();
            assert_eq!(
                stats.diff_id,
                Digest::sha256_of(&blob),
                "the diff_id covers every byte"
            );
            assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"content");
        }
        std::fs::remove_dir_all(&dest).unwrap();
    }
    // Garbage after a compressed stream is not accepted.
    let mut t = Tb::new();
    t.file("f", b"content");
    let mut gz = gzip(&t.finish());
    gz.extend_from_slice(b"garbage after the gzip member");
    let err = apply(&gz[..], &env.dest, &opts()).unwrap_err();
    assert!(matches!(err, LayerError::Decompress { .. }), "{err}");
    env.check_host();
}

/// A tar header for a file of `size` bytes, followed by gzip (or zstd)
/// members of zeros: about 1 MiB compressed per GiB.
fn bomb(compress: fn(&[u8]) -> Vec<u8>, size: u64) -> Vec<u8> {
    let mut h = Header::new_ustar();
    set_field(&mut h.as_old_mut().name, b"bomb");
    h.set_entry_type(EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = compress(h.as_bytes());
    let member = compress(&vec![0u8; 1 << 20]);
    for _ in 0..(size >> 20) {
        out.extend_from_slice(&member);
    }
    out
}

#[test]
fn a_compression_bomb_stops_at_max_uncompressed() {
    root_test!();
    let env = env();
    let o = ApplyOptions {
        max_uncompressed: Some(8 << 20),
        ..opts()
    };
    for (compress, format) in [(gzip as fn(&[u8]) -> Vec<u8>, "gzip"), (zstd, "zstd")] {
        let blob = bomb(compress, 1 << 30);
        assert!(
            blob.len() < 8 << 20,
            "{format} bomb is small: {}",
            blob.len()
        );
        let dest = env.top.join(format);
        std::fs::create_dir(&dest).unwrap();
        let start = Instant::now();
        let err = apply(&blob[..], &dest, &o).unwrap_err();
        assert!(
            matches!(err, LayerError::TooLarge { limit } if limit == 8 << 20),
            "{err}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{format}: took {:?}",
            start.elapsed()
        );
        let written = lmeta(&dest.join("bomb"));
        assert!(written.blocks() * 512 <= 9 << 20);
        std::fs::remove_dir_all(&dest).unwrap();
    }
    env.check_host();
}

#[test]
fn a_sparse_bomb_stops_at_max_uncompressed() {
    root_test!();
    let env = env();
    let o = ApplyOptions {
        max_uncompressed: Some(16 << 20),
        ..opts()
    };
    let mut t = Tb::new();
    t.sparse(
        "huge",
        1 << 40,
        &[(0, &[1u8; 512]), ((1 << 40) - 512, &[2u8; 512])],
    );
    let start = Instant::now();
    let err = apply(&t.finish()[..], &env.dest, &o).unwrap_err();
    assert!(matches!(err, LayerError::TooLarge { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20));
    env.check_host();
}

#[test]
fn huge_headers_are_refused() {
    root_test!();
    let env = env();
    // A PAX header claiming 64 MiB of records, and a GNU long name of 64 MiB:
    // refused before they are held in memory.
    for kind in [EntryType::XHeader, EntryType::GNULongName] {
        let mut h = if kind == EntryType::GNULongName {
            Header::new_gnu()
        } else {
            Header::new_ustar()
        };
        set_field(&mut h.as_old_mut().name, b"././@LongLink");
        h.set_entry_type(kind);
        h.set_size(64 << 20);
        h.set_cksum();
        let mut blob = h.as_bytes().to_vec();
        let mut rec = pax_data(&[(b"comment", &vec![b'x'; (64 << 20) - 100])]);
        rec.resize(64 << 20, b'x');
        blob.extend_from_slice(&rec);
        let err = apply(&blob[..], &env.dest, &opts()).unwrap_err();
        assert!(matches!(err, LayerError::Malformed { .. }), "{err}");
    }
    env.check_host();
}

#[test]
fn a_diff_id_that_does_not_match_is_an_error() {
    root_test!();
    let env = env();
    let mut t = Tb::new();
    t.file("f", b"content");
    let layer = t.finish();
    let wrong = Digest::sha256_of(b"something else");
    let o = ApplyOptions {
        expected_diff_id: Some(wrong.clone()),
        ..opts()
    };
    let err = apply(&gzip(&layer)[..], &env.dest, &o).unwrap_err();
    match err {
        LayerError::DiffIdMismatch { expected, actual } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, Digest::sha256_of(&layer));
        }
        e => panic!("{e}"),
    }
    let o = ApplyOptions {
        expected_digest: Some(wrong),
        ..opts()
    };
    let err = apply(&layer[..], &env.dest, &o).unwrap_err();
    assert!(matches!(err, LayerError::DigestMismatch { .. }), "{err}");
    env.check_host();
}

#[test]
fn odd_names_and_types() {
    root_test!();
    let env = env();
    // A NUL inside a PAX path, an empty whiteout, an unknown type.
    let bad: Vec<Vec<u8>> = vec![
        {
            let mut t = Tb::new();
            t.add(e("x", EntryType::Regular).pax("path", b"a\0b"));
            t.finish()
        },
        {
            let mut t = Tb::new();
            t.add(e("dir/.wh.", EntryType::Regular));
            t.finish()
        },
        {
            let mut t = Tb::new();
            t.add(e("dir/.wh..", EntryType::Regular));
            t.finish()
        },
        {
            let mut t = Tb::new();
            t.add(e("v", EntryType::new(b'V')));
            t.finish()
        },
        {
            let mut t = Tb::new();
            t.add(e("s", EntryType::Symlink));
            t.finish()
        },
    ];
    for (i, layer) in bad.into_iter().enumerate() {
        let dest = env.top.join(format!("o{i}"));
        std::fs::create_dir(&dest).unwrap();
        let err = apply(&layer[..], &dest, &opts()).unwrap_err();
        assert!(matches!(err, LayerError::InvalidEntry { .. }), "{i}: {err}");
        std::fs::remove_dir_all(&dest).unwrap();
    }
    // Accepted oddities: a global PAX header, an old-style directory, a
    // PAX mtime with a fraction, a root directory entry.
    let mut t = Tb::new();
    t.add(e("pax_global_header", EntryType::XGlobalHeader).data(&pax_data(&[(b"comment", b"hi")])))
        .add(e("./", EntryType::Directory).mode(0o711).mtime(MTIME - 5))
        .add(e("olddir/", EntryType::Regular).v7())
        .add(e("frac", EntryType::Regular).pax("mtime", b"1600000000.25"));
    apply(&t.finish()[..], &env.dest, &opts()).unwrap();
    assert!(lmeta(&env.dest.join("olddir")).is_dir());
    assert!(!env.dest.join("pax_global_header").exists());
    let frac = lmeta(&env.dest.join("frac"));
    assert_eq!(
        (frac.mtime(), frac.mtime_nsec()),
        (1_600_000_000, 250_000_000)
    );
    let root = lmeta(&env.dest);
    assert_eq!(
        (root.mode() & 0o7777, root.mtime() as u64),
        (0o711, MTIME - 5)
    );
    env.check_host();
}

#[test]
fn diff_refuses_metacopy_uppers() {
    root_test!();
    let env = env();
    std::fs::write(env.dest.join("f"), b"").unwrap();
    berth_sys::xattr::lset(&env.dest.join("f"), b"trusted.overlay.metacopy", b"").unwrap();
    let err = diff(&env.dest, std::io::sink(), &DiffOptions::default()).unwrap_err();
    assert!(matches!(err, LayerError::Unsupported { .. }), "{err}");
    env.check_host();
}

#[test]
fn diff_of_shared_whiteout_inodes_writes_whiteouts() {
    root_test!();
    let env = env();
    // overlayfs may hardlink whiteouts to one shared inode.
    nix::sys::stat::mknod(
        &env.dest.join("w1"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    std::fs::hard_link(env.dest.join("w1"), env.dest.join("w2")).unwrap();
    let mut out = Vec::new();
    diff(
        &env.dest,
        &mut out,
        &DiffOptions {
            compression: Compression::None,
            ..Default::default()
        },
    )
    .unwrap();
    let mut ar = tar::Archive::new(&out[..]);
    let entries: Vec<_> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                e.header().entry_type(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (".wh.w1".to_string(), EntryType::Regular),
            (".wh.w2".to_string(), EntryType::Regular)
        ]
    );
    env.check_host();
}

// ---------------------------------------------------------------------------
// Tar split: the exact tar back from the unpacked files.

/// Apply `tar` (as given, maybe compressed) recording a split, and give the
/// uncompressed tar back from it.
fn split_round_trip(
    env: &Env,
    name: &str,
    tar: &[u8],
) -> (Vec<u8>, berth_image::layer::ApplyStats) {
    let layer = env.dest.join(name);
    let diff_dir = layer.join("diff");
    std::fs::create_dir_all(&diff_dir).unwrap();
    let o = ApplyOptions {
        split: Some(layer.clone()),
        ..opts()
    };
    let stats = apply(tar, &diff_dir, &o).unwrap();
    let info = berth_image::layer::split::info(&layer).unwrap();
    assert_eq!(info.diff_id, stats.diff_id);
    assert_eq!(info.size, stats.uncompressed_size);
    let mut out = Vec::new();
    let back = berth_image::layer::split::reassemble(&layer, &diff_dir, &mut out).unwrap();
    assert_eq!(back, info);
    (out, stats)
}

#[test]
fn split_gives_back_the_exact_tar() {
    root_test!();
    let env = env();
    let rich = rich_layer();
    let (back, stats) = split_round_trip(&env, "rich", &rich);
    assert_eq!(back, rich, "byte for byte");
    assert_eq!(stats.diff_id, Digest::sha256_of(&rich));
    // Compressed input: the uncompressed tar comes back.
    let (back, _) = split_round_trip(&env, "rich-gz", &gzip(&rich));
    assert_eq!(back, rich);
    // Padding and trailing garbage after the end blocks (the rich layer
    // has a sparse file, long names and PAX records).
    let mut t = Tb::new();
    t.file("after", b"after the end");
    let mut odd = t.finish();
    odd.extend_from_slice(&[0u8; 3 * 512]);
    odd.extend_from_slice(b"trailing garbage");
    let (back, _) = split_round_trip(&env, "odd", &odd);
    assert_eq!(back, odd);
    env.check_host();
}

#[test]
fn split_survives_entries_that_replace_earlier_files() {
    root_test!();
    let env = env();
    let big = vec![b'b'; 200_000];
    let mut t = Tb::new();
    t.file("f", b"one")
        .file("f", b"two")
        .dir("d/")
        .file("d/a", &big)
        .dir("d/sub/")
        .file("d/sub/b", b"deep")
        .file("d", b"the directory became a file")
        .file("w", b"whited out in its own layer")
        .file(".wh.w", b"")
        .file("h", b"hard")
        .hardlink("h2", "h")
        .file("h", b"replaced, the link keeps the old inode");
    let tar = t.finish();
    let (back, _) = split_round_trip(&env, "dups", &tar);
    assert_eq!(back, tar);
    assert!(env.dest.join("dups/tar-split.stash").is_file());
    env.check_host();
}

#[test]
fn split_refuses_to_give_back_changed_files() {
    root_test!();
    let env = env();
    let mut t = Tb::new();
    t.file("a", b"original").file("b", b"other");
    let tar = t.finish();
    split_round_trip(&env, "changed", &tar);
    let layer = env.dest.join("changed");
    std::fs::write(layer.join("diff/a"), b"0riginal").unwrap();
    let err = berth_image::layer::split::reassemble(&layer, &layer.join("diff"), std::io::sink())
        .unwrap_err();
    assert!(err.to_string().contains("no longer match"), "{err}");
    std::fs::write(layer.join("diff/a"), b"longer than before").unwrap();
    let err = berth_image::layer::split::reassemble(&layer, &layer.join("diff"), std::io::sink())
        .unwrap_err();
    assert!(err.to_string().contains("no longer match"), "{err}");
    env.check_host();
}
