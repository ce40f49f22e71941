//! bpf(2): load a program, attach it to a cgroup or to a network device's
//! TCX hook, list what is attached, detach; hash maps and their elements.
//!
//! Only the commands berth needs are wrapped: the cgroup v2 device
//! controller's programs (berth-runtime) and the networks' fast path
//! (berth-net). The program text is built by the caller; this module only
//! moves instructions, bytes and descriptors across the syscall boundary.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `enum bpf_prog_type`: a cgroup device program.
pub const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `enum bpf_attach_type`: attach point of device programs on a cgroup.
pub const BPF_CGROUP_DEVICE: u32 = 6;
/// Attach flag: allow a descendant cgroup to override this program.
pub const BPF_F_ALLOW_OVERRIDE: u32 = 1;
/// Attach flag: several programs on one cgroup, all of which must allow.
pub const BPF_F_ALLOW_MULTI: u32 = 2;
/// `enum bpf_prog_type`: a traffic-control classifier (TCX programs).
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `enum bpf_attach_type`: a network device's TCX ingress hook (Linux 6.6).
pub const BPF_TCX_INGRESS: u32 = 46;
/// `enum bpf_attach_type`: a network device's TCX egress hook (Linux 6.6).
pub const BPF_TCX_EGRESS: u32 = 47;
/// `enum bpf_prog_type`: a cgroup's socket address hooks (connect,
/// getpeername, …).
pub const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `enum bpf_attach_type`: IPv4 `connect()` in a cgroup.
pub const BPF_CGROUP_INET4_CONNECT: u32 = 10;
/// `enum bpf_attach_type`: IPv4 `getpeername()` in a cgroup.
pub const BPF_CGROUP_INET4_GETPEERNAME: u32 = 29;
/// `enum bpf_map_type`: a hash table that drops its least recently used
/// elements when full.
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// `enum bpf_map_type`: a hash table.
pub const BPF_MAP_TYPE_HASH: u32 = 1;
/// Map flag: allocate elements as they are added, not all at creation.
pub const BPF_F_NO_PREALLOC: u32 = 1;

// `enum bpf_cmd`
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;

/// Size of the verifier log asked for when a load fails.
const LOG_SIZE: usize = 256 * 1024;

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`:
/// opcode, then destination register in the low nibble and source register
/// in the high nibble of one byte, a 16-bit offset and a 32-bit immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// An instruction from its parts; registers are 0..=10.
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: ((src & 0x0f) << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }

    pub const fn dst(&self) -> u8 {
        self.regs & 0x0f
    }

    pub const fn src(&self) -> u8 {
        self.regs >> 4
    }
}

/// Instruction constructors: the eBPF instruction set's encodings, for
/// callers that assemble programs.
pub mod asm {
    use super::Insn;

    /// The frame pointer (read-only): the stack is below it.
    pub const FP: u8 = 10;

    // Operand sizes for loads and stores.
    pub const B: u8 = 0x10;
    pub const H: u8 = 0x08;
    pub const W: u8 = 0x00;
    pub const DW: u8 = 0x18;

    // Jump conditions (BPF_JMP | op).
    pub const JEQ: u8 = 0x10;
    pub const JNE: u8 = 0x50;

    const ALU64: u8 = 0x07;
    const JMP: u8 = 0x05;
    const LDX_MEM: u8 = 0x01 | 0x60;
    const ST_MEM: u8 = 0x02 | 0x60;
    const STX_MEM: u8 = 0x03 | 0x60;
    const MOV: u8 = 0xb0;
    const ADD: u8 = 0x00;
    const X: u8 = 0x08;

    /// dst &= imm
    pub const fn and64(dst: u8, imm: i32) -> Insn {
        Insn::new(ALU64 | 0x50, dst, 0, 0, imm)
    }
    /// *(size *)(dst + off) = src
    pub const fn store(size: u8, dst: u8, off: i16, src: u8) -> Insn {
        Insn::new(STX_MEM | size, dst, src, off, 0)
    }
    /// dst = imm, all 64 bits (two instructions)
    pub const fn load_imm64(dst: u8, imm: u64) -> [Insn; 2] {
        [
            Insn::new(0x18, dst, 0, 0, imm as u32 as i32),
            Insn::new(0, 0, 0, 0, (imm >> 32) as u32 as i32),
        ]
    }
    /// dst = imm (sign-extended)
    pub const fn mov64(dst: u8, imm: i32) -> Insn {
        Insn::new(ALU64 | MOV, dst, 0, 0, imm)
    }
    /// dst = src
    pub const fn mov64_reg(dst: u8, src: u8) -> Insn {
        Insn::new(ALU64 | MOV | X, dst, src, 0, 0)
    }
    /// dst += imm
    pub const fn add64(dst: u8, imm: i32) -> Insn {
        Insn::new(ALU64 | ADD, dst, 0, 0, imm)
    }
    /// dst = *(size *)(src + off)
    pub const fn load(size: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(LDX_MEM | size, dst, src, off, 0)
    }
    /// *(size *)(dst + off) = imm
    pub const fn store_imm(size: u8, dst: u8, off: i16, imm: i32) -> Insn {
        Insn::new(ST_MEM | size, dst, 0, off, imm)
    }
    /// if dst <op> imm goto +off
    pub const fn jump_imm(op: u8, dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(JMP | op, dst, 0, off, imm)
    }
    /// if dst <op> src goto +off
    pub const fn jump_reg(op: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(JMP | op | X, dst, src, off, 0)
    }
    /// goto +off
    pub const fn ja(off: i16) -> Insn {
        Insn::new(JMP, 0, 0, off, 0)
    }
    /// r0 = helper(r1, …, r5)
    pub const fn call(helper: i32) -> Insn {
        Insn::new(JMP | 0x80, 0, 0, 0, helper)
    }
    pub const fn exit() -> Insn {
        Insn::new(JMP | 0x90, 0, 0, 0, 0)
    }
    /// dst = the map behind descriptor `fd` (two instructions: a 64-bit
    /// immediate load with the map-fd pseudo source).
    pub const fn load_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [Insn::new(0x18, dst, 1, 0, fd), Insn::new(0, 0, 0, 0, 0)]
    }
}

/// A program the kernel refused, with the verifier's explanation.
#[derive(Debug)]
pub struct ProgLoadError {
    pub error: io::Error,
    /// The verifier log (empty when the kernel gave none).
    pub log: String,
}

impl fmt::Display for ProgLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.log.trim().is_empty() {
            write!(f, "bpf program load: {}", self.error)
        } else {
            write!(
                f,
                "bpf program load: {}: verifier log: {}",
                self.error,
                self.log.trim()
            )
        }
    }
}

impl std::error::Error for ProgLoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

// The parts of `union bpf_attr` used here. Every struct spells out its
// padding so that no byte handed to the kernel is uninitialised, and the
// kernel treats missing trailing fields as zero.

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_prog_info`; the kernel copies only as much as
/// `info_len` says.
#[repr(C)]
#[derive(Default)]
struct ProgInfoHead {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// What [`prog_info`] tells of a loaded program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    pub prog_type: u32,
    /// The name it was loaded with (at most 15 bytes).
    pub name: String,
    /// The ids of the maps it uses.
    pub map_ids: Vec<u32>,
}

/// bpf(2) with one attribute struct. Returns the syscall's non-negative
/// result.
///
/// # Safety
/// `attr` must be the attribute struct the kernel expects for `cmd`, and
/// every pointer stored in it must be valid for the access the command
/// makes (read or write) for the duration of the call.
///
/// The kernel is handed a zeroed buffer as large as its whole `union
/// bpf_attr` with `attr` at its start, and what it wrote there is copied
/// back into `attr`: some commands write fields beyond the ones a caller
/// uses whatever size it passes (a TCX query writes `revision`, 56 bytes
/// in, past a 32-byte query struct), which must land in this buffer, not
/// on the caller's stack.
unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let size = std::mem::size_of::<T>();
    assert!(
        size <= ATTR_BUF,
        "bpf attribute struct larger than the buffer"
    );
    let mut buf = AttrBuf([0; ATTR_BUF]);
    // SAFETY: `attr` is a live, fully initialised struct of `size` bytes
    // (the attribute structs spell out their padding), and `buf` has room
    // for them; the two do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(attr as *const T as *const u8, buf.0.as_mut_ptr(), size);
    }
    let res = loop {
        // SAFETY: guaranteed by this function's contract: the buffer holds
        // the attribute struct the command expects, its embedded pointers
        // are valid, and the rest of the buffer is zero, as the kernel
        // requires of bytes it does not know.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                buf.0.as_mut_ptr(),
                ATTR_BUF as libc::c_uint,
            )
        };
        if rc >= 0 {
            break Ok(rc);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            break Err(err);
        }
    };
    // SAFETY: `buf` holds `size` initialised bytes, which are a valid `T`
    // (plain integers and arrays of them) written back into `attr`.
    unsafe {
        std::ptr::copy_nonoverlapping(buf.0.as_ptr(), attr as *mut T as *mut u8, size);
    }
    res
}

/// Larger than any kernel's `union bpf_attr` so far (about 150 bytes).
const ATTR_BUF: usize = 256;

#[repr(C, align(8))]
struct AttrBuf([u8; ATTR_BUF]);

/// Wrap a descriptor number just returned by the kernel.
fn owned_fd(rc: libc::c_long) -> io::Result<OwnedFd> {
    let raw = i32::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: `raw` is a new descriptor the kernel has just created for this
    // process (bpf(2) returns fresh fds with O_CLOEXEC set); nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // A BorrowedFd is never negative.
    fd.as_raw_fd() as u32
}

/// An object name for the kernel: cut to 15 bytes, NUL-terminated.
fn obj_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (dst, src) in out.iter_mut().take(15).zip(name.bytes()) {
        *dst = src;
    }
    out
}

/// Create a map. `name` is cut to 15 bytes (letters, digits, '_', '.').
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags: flags,
        map_name: obj_name(name),
        ..Default::default()
    };
    // SAFETY: BPF_MAP_CREATE reads the plain integers and name of `attr`.
    let rc = unsafe { sys_bpf(BPF_MAP_CREATE, &mut attr) }?;
    owned_fd(rc)
}

/// Set `key` to `value` in `map` (made or replaced). The slices must be
/// exactly the map's key and value sizes, or the kernel reads past them;
/// that is checked against what the caller says the sizes are.
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..Default::default()
    };
    check_sizes(map, key.len(), Some(value.len()))?;
    // SAFETY: `key` and `value` are live for the call and exactly as long
    // as the map's key and value (checked above); the kernel only reads
    // them.
    unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
}

/// Read `key`'s value from `map` into `value`: false when there is none.
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    check_sizes(map, key.len(), Some(value.len()))?;
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `key` is read and `value` written, each exactly the map's
    // size (checked above), both live for the call.
    found(unsafe { sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) })
}

/// A map command's result: whether the key was there.
fn found(res: io::Result<libc::c_long>) -> io::Result<bool> {
    match res {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Remove `key` from `map`: false when it was not there.
pub fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<bool> {
    check_sizes(map, key.len(), None)?;
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        key: key.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `key` is exactly the map's key size (checked above), live
    // for the call; the kernel only reads it.
    found(unsafe { sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) })
}

/// Every key of `map` (of `key_size` bytes each), in the map's order.
/// Keys added or removed meanwhile may or may not be seen.
pub fn map_keys(map: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let info = map_info(map)?;
    let size = info.key_size as usize;
    let mut keys: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut next = vec![0u8; size];
        let mut attr = MapElemAttr {
            map_fd: fd_u32(map),
            // No key: the first one.
            key: keys.last().map_or(0, |k| k.as_ptr() as u64),
            value: next.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `key` is null or the previous key, `key_size` bytes,
        // read; `value` (the next key's place) is `key_size` writable
        // bytes; both live for the call.
        match unsafe { sys_bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            Ok(_) => keys.push(next),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
            Err(e) => return Err(e),
        }
        if keys.len() > info.max_entries as usize {
            // Keys deleted behind us restart the walk; do not loop forever.
            return Ok(keys);
        }
    }
}

/// The kernel's id of a map.
pub fn map_id(map: BorrowedFd<'_>) -> io::Result<u32> {
    map_info(map).map(|i| i.id)
}

/// The type of a map (`BPF_MAP_TYPE_*`).
pub fn map_type(map: BorrowedFd<'_>) -> io::Result<u32> {
    map_info(map).map(|i| i.map_type)
}

/// The cookie of the calling thread's network namespace (what
/// `bpf_get_netns_cookie` gives a program; Linux 5.14).
pub fn netns_cookie() -> io::Result<u64> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("[::1]:0"))?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` is a writable u64 and `len` says so; the socket is
    // live for the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            &mut cookie as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The head of `struct bpf_map_info`.
#[repr(C)]
#[derive(Default)]
struct MapInfoHead {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: [u8; 16],
}

fn map_info(map: BorrowedFd<'_>) -> io::Result<MapInfoHead> {
    let mut info = MapInfoHead::default();
    let mut attr = InfoByFdAttr {
        bpf_fd: fd_u32(map),
        info_len: std::mem::size_of::<MapInfoHead>() as u32,
        info: &mut info as *mut MapInfoHead as u64,
    };
    // SAFETY: `info` points to a writable MapInfoHead of `info_len` bytes
    // that outlives the call.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info)
}

/// The kernel copies as many bytes as the map's sizes from the pointers it
/// is given: refuse slices of another length before they reach it.
fn check_sizes(map: BorrowedFd<'_>, key: usize, value: Option<usize>) -> io::Result<()> {
    let info = map_info(map)?;
    let bad = key != info.key_size as usize || value.is_some_and(|v| v != info.value_size as usize);
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "bpf map element of {key}/{value:?} bytes, the map's are {}/{}",
                info.key_size, info.value_size
            ),
        ));
    }
    Ok(())
}

/// A descriptor for the map with this id.
pub fn map_get_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    fd_by_id(BPF_MAP_GET_FD_BY_ID, id)
}

/// BPF_PROG_GET_FD_BY_ID or BPF_MAP_GET_FD_BY_ID.
fn fd_by_id(cmd: libc::c_long, id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        prog_id: id,
        ..Default::default()
    };
    // SAFETY: both commands read the plain integers of `attr` only.
    let rc = unsafe { sys_bpf(cmd, &mut attr) }?;
    owned_fd(rc)
}

/// Load a program of `prog_type`. `name` is cut to 15 bytes (the kernel
/// accepts letters, digits, '_' and '.'). When the kernel refuses, the load
/// is retried once with a verifier log, returned in the error.
pub fn prog_load(
    prog_type: u32,
    insns: &[Insn],
    license: &CStr,
    name: &str,
) -> Result<OwnedFd, ProgLoadError> {
    prog_load_for(prog_type, 0, insns, license, name)
}

/// [`prog_load`] for a program type that must name its attach point when
/// loaded (`expected_attach_type`, e.g. the socket address hooks).
pub fn prog_load_for(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[Insn],
    license: &CStr,
    name: &str,
) -> Result<OwnedFd, ProgLoadError> {
    let insn_cnt = u32::try_from(insns.len()).map_err(|_| ProgLoadError {
        error: io::Error::from_raw_os_error(libc::E2BIG),
        log: String::new(),
    })?;
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: obj_name(name),
        expected_attach_type,
        ..Default::default()
    };
    // SAFETY: `insns` (insn_cnt elements) and `license` (NUL-terminated) are
    // borrowed for the whole call; the kernel only reads them. No log buffer.
    if let Ok(rc) = unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) } {
        return owned_fd(rc).map_err(|error| ProgLoadError {
            error,
            log: String::new(),
        });
    }
    let mut log = vec![0u8; LOG_SIZE];
    attr.log_level = 1;
    attr.log_size = LOG_SIZE as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    // SAFETY: as above, plus `log` is a writable buffer of exactly
    // `log_size` bytes that outlives the call.
    let res = unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) };
    match res {
        Ok(rc) => owned_fd(rc).map_err(|error| ProgLoadError {
            error,
            log: String::new(),
        }),
        Err(error) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(ProgLoadError {
                error,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

/// Attach `prog` to the cgroup directory `cgroup` (an fd of the directory).
pub fn prog_attach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
    flags: u32,
) -> io::Result<()> {
    attach(fd_u32(cgroup), prog, attach_type, flags)
}

/// Detach `prog` from the cgroup directory `cgroup`.
pub fn prog_detach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<()> {
    detach(fd_u32(cgroup), prog, attach_type)
}

/// The ids of the programs attached to the cgroup directory `cgroup` at
/// `attach_type` (only those attached to this cgroup itself, not inherited).
pub fn prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
    query(fd_u32(cgroup), attach_type)
}

/// Attach `prog` (a `BPF_PROG_TYPE_SCHED_CLS` program) to the TCX hook
/// `attach_type` of the network device `ifindex`, after those already
/// there. The device is looked up in the calling thread's network
/// namespace; the program stays until detached or the device goes.
pub fn tcx_attach(ifindex: u32, prog: BorrowedFd<'_>, attach_type: u32) -> io::Result<()> {
    attach(ifindex, prog, attach_type, 0)
}

/// Detach `prog` from the TCX hook `attach_type` of device `ifindex`.
pub fn tcx_detach(ifindex: u32, prog: BorrowedFd<'_>, attach_type: u32) -> io::Result<()> {
    detach(ifindex, prog, attach_type)
}

/// The ids of the programs on the TCX hook `attach_type` of device
/// `ifindex`, in the order they run.
pub fn tcx_query(ifindex: u32, attach_type: u32) -> io::Result<Vec<u32>> {
    query(ifindex, attach_type)
}

/// BPF_PROG_ATTACH; `target` is a cgroup fd or a device's ifindex.
fn attach(target: u32, prog: BorrowedFd<'_>, attach_type: u32, flags: u32) -> io::Result<()> {
    attach_cmd(BPF_PROG_ATTACH, target, prog, attach_type, flags)
}

fn detach(target: u32, prog: BorrowedFd<'_>, attach_type: u32) -> io::Result<()> {
    attach_cmd(BPF_PROG_DETACH, target, prog, attach_type, 0)
}

fn attach_cmd(
    cmd: libc::c_long,
    target: u32,
    prog: BorrowedFd<'_>,
    attach_type: u32,
    flags: u32,
) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: target,
        attach_bpf_fd: fd_u32(prog),
        attach_type,
        attach_flags: flags,
        replace_bpf_fd: 0,
    };
    // SAFETY: BPF_PROG_ATTACH and BPF_PROG_DETACH read the plain integers
    // of `attr` only.
    unsafe { sys_bpf(cmd, &mut attr) }.map(drop)
}

/// Of the programs with these ids, the ones named `name`, with a
/// descriptor each. A program gone meanwhile is left out.
pub fn programs_named(ids: &[u32], name: &str) -> io::Result<Vec<(OwnedFd, ProgInfo)>> {
    let mut out = Vec::new();
    for &id in ids {
        let Ok(fd) = prog_get_fd_by_id(id) else {
            continue;
        };
        let info = prog_info(fd.as_fd())?;
        if info.name == name {
            out.push((fd, info));
        }
    }
    Ok(out)
}

fn query(target: u32, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids: Vec<u32> = Vec::new();
    loop {
        let mut attr = QueryAttr {
            target_fd: target,
            attach_type,
            ..Default::default()
        };
        if !ids.is_empty() {
            attr.prog_ids = ids.as_mut_ptr() as u64;
            attr.prog_cnt = ids.len() as u32;
        }
        // SAFETY: `prog_ids` is either 0 (count only) or points to `ids`,
        // which has room for `prog_cnt` u32 values and outlives the call.
        match unsafe { sys_bpf(BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                let n = attr.prog_cnt as usize;
                if ids.is_empty() && n > 0 {
                    ids = vec![0; n];
                    continue;
                }
                ids.truncate(n);
                return Ok(ids);
            }
            // More programs appeared between the two calls: ask again.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                ids = vec![0; (attr.prog_cnt as usize).max(ids.len() + 1)];
            }
            Err(e) => return Err(e),
        }
    }
}

/// A descriptor for the loaded program with this id (needed to detach a
/// program that some earlier process attached).
pub fn prog_get_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    fd_by_id(BPF_PROG_GET_FD_BY_ID, id)
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

/// Run a loaded program once on the packet `data` (an Ethernet frame for
/// a classifier) without attaching it anywhere: its return value. What a
/// redirect helper asks for is not carried out.
pub fn prog_test_run(prog: BorrowedFd<'_>, data: &[u8]) -> io::Result<i32> {
    let mut attr = TestRunAttr {
        prog_fd: fd_u32(prog),
        data_size_in: u32::try_from(data.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        data_in: data.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: `data` is live for the call and `data_size_in` bytes long;
    // the kernel copies it in and writes nothing back (no output buffer).
    unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    Ok(attr.retval as i32)
}

/// The kernel's id of a loaded program.
pub fn prog_id(prog: BorrowedFd<'_>) -> io::Result<u32> {
    prog_info(prog).map(|i| i.id)
}

/// A loaded program's id, type, name and maps.
pub fn prog_info(prog: BorrowedFd<'_>) -> io::Result<ProgInfo> {
    // Room for a few map ids; the kernel says how many there are.
    let mut map_ids = [0u32; 8];
    let mut info = ProgInfoHead {
        nr_map_ids: map_ids.len() as u32,
        map_ids: map_ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut attr = InfoByFdAttr {
        bpf_fd: fd_u32(prog),
        info_len: std::mem::size_of::<ProgInfoHead>() as u32,
        info: &mut info as *mut ProgInfoHead as u64,
    };
    // SAFETY: `info` points to a writable ProgInfoHead of `info_len` bytes,
    // and its `map_ids` to `nr_map_ids` writable u32s; both outlive the
    // call.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    let n = (info.nr_map_ids as usize).min(map_ids.len());
    let end = info.name.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(ProgInfo {
        id: info.id,
        prog_type: info.prog_type,
        name: String::from_utf8_lossy(&info.name[..end]).into_owned(),
        map_ids: map_ids[..n].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn insn_layout_matches_struct_bpf_insn() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        let i = Insn::new(0xb7, 0, 0, 0, 1);
        assert_eq!((i.dst(), i.src()), (0, 0));
        let i = Insn::new(0x5d, 1, 3, 7, 0);
        assert_eq!(i.regs, 0x31);
        assert_eq!((i.dst(), i.src()), (1, 3));
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::size_of::<QueryAttr>(), 32);
        assert_eq!(std::mem::size_of::<AttachAttr>(), 20);
    }

    /// Root: load "allow everything", attach it to a fresh cgroup2
    /// directory, see it in a query, detach it.
    #[test]
    fn load_attach_query_detach() {
        if std::env::var_os("BERTH_SKIP_ROOT_TESTS").is_some_and(|v| v == "1") {
            return;
        }
        // SAFETY: geteuid has no preconditions and touches no memory.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test needs root (set BERTH_SKIP_ROOT_TESTS=1 to skip)"
        );
        let mount = crate::mount::cgroup2_root().expect("no cgroup2 mount in /proc/self/mountinfo");
        let dir = mount.join(format!("berth-sys-bpf-test-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("mkdir cgroup");
        struct Rm(std::path::PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _rm = Rm(dir.clone());

        let prog = [Insn::new(0xb7, 0, 0, 0, 1), Insn::new(0x95, 0, 0, 0, 0)];
        let fd = prog_load(
            BPF_PROG_TYPE_CGROUP_DEVICE,
            &prog,
            c"Apache-2.0",
            "berth_test",
        )
        .expect("load");
        let id = prog_id(fd.as_fd()).expect("prog id");
        assert!(id > 0);
        let cg = std::fs::File::open(&dir).expect("open cgroup dir");
        assert!(prog_query(cg.as_fd(), BPF_CGROUP_DEVICE)
            .expect("query")
            .is_empty());
        prog_attach(cg.as_fd(), fd.as_fd(), BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI).expect("attach");
        assert_eq!(
            prog_query(cg.as_fd(), BPF_CGROUP_DEVICE).expect("query"),
            vec![id]
        );
        let again = prog_get_fd_by_id(id).expect("fd by id");
        prog_detach(cg.as_fd(), again.as_fd(), BPF_CGROUP_DEVICE).expect("detach");
        assert!(prog_query(cg.as_fd(), BPF_CGROUP_DEVICE)
            .expect("query")
            .is_empty());
    }

    #[test]
    fn verifier_log_on_bad_program() {
        if std::env::var_os("BERTH_SKIP_ROOT_TESTS").is_some_and(|v| v == "1") {
            return;
        }
        // SAFETY: geteuid has no preconditions and touches no memory.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test needs root (set BERTH_SKIP_ROOT_TESTS=1 to skip)"
        );
        // exit without setting r0: the verifier must refuse.
        let prog = [Insn::new(0x95, 0, 0, 0, 0)];
        let err = prog_load(
            BPF_PROG_TYPE_CGROUP_DEVICE,
            &prog,
            c"Apache-2.0",
            "berth_bad",
        )
        .expect_err("must fail");
        assert!(err.log.contains("R0"), "log: {}", err.log);
    }
}
