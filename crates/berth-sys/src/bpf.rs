//! bpf(2) for cgroup programs: load a program, attach it to a cgroup,
//! list what is attached, detach.
//!
//! Only the few commands the cgroup v2 device controller needs are wrapped.
//! The program text is built by the caller (berth-runtime assembles its
//! `BPF_PROG_TYPE_CGROUP_DEVICE` programs itself); this module only moves
//! instructions and descriptors across the syscall boundary.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `enum bpf_prog_type`: a cgroup device program.
pub const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `enum bpf_attach_type`: attach point of device programs on a cgroup.
pub const BPF_CGROUP_DEVICE: u32 = 6;
/// Attach flag: allow a descendant cgroup to override this program.
pub const BPF_F_ALLOW_OVERRIDE: u32 = 1;
/// Attach flag: several programs on one cgroup, all of which must allow.
pub const BPF_F_ALLOW_MULTI: u32 = 2;

// `enum bpf_cmd`
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
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
}

/// bpf(2) with one attribute struct. Returns the syscall's non-negative
/// result.
///
/// # Safety
/// `attr` must be the attribute struct the kernel expects for `cmd`, and
/// every pointer stored in it must be valid for the access the command
/// makes (read or write) for the duration of the call.
unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let size = std::mem::size_of::<T>() as libc::c_uint;
    loop {
        // SAFETY: guaranteed by this function's contract: `attr` points to a
        // live, fully initialised struct of `size` bytes whose embedded
        // pointers are valid.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size) };
        if rc >= 0 {
            return Ok(rc);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

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

/// Load a program of `prog_type`. `name` is cut to 15 bytes (the kernel
/// accepts letters, digits, '_' and '.'). When the kernel refuses, the load
/// is retried once with a verifier log, returned in the error.
pub fn prog_load(
    prog_type: u32,
    insns: &[Insn],
    license: &CStr,
    name: &str,
) -> Result<OwnedFd, ProgLoadError> {
    let insn_cnt = u32::try_from(insns.len()).map_err(|_| ProgLoadError {
        error: io::Error::from_raw_os_error(libc::E2BIG),
        log: String::new(),
    })?;
    let mut prog_name = [0u8; 16];
    for (dst, src) in prog_name.iter_mut().take(15).zip(name.bytes()) {
        *dst = src;
    }
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
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
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type,
        attach_flags: flags,
        replace_bpf_fd: 0,
    };
    // SAFETY: BPF_PROG_ATTACH reads the plain integers of `attr` only.
    unsafe { sys_bpf(BPF_PROG_ATTACH, &mut attr) }.map(drop)
}

/// Detach `prog` from the cgroup directory `cgroup`.
pub fn prog_detach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type,
        attach_flags: 0,
        replace_bpf_fd: 0,
    };
    // SAFETY: BPF_PROG_DETACH reads the plain integers of `attr` only.
    unsafe { sys_bpf(BPF_PROG_DETACH, &mut attr) }.map(drop)
}

/// The ids of the programs attached to the cgroup directory `cgroup` at
/// `attach_type` (only those attached to this cgroup itself, not inherited).
pub fn prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids: Vec<u32> = Vec::new();
    loop {
        let mut attr = QueryAttr {
            target_fd: fd_u32(cgroup),
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
    let mut attr = GetFdByIdAttr {
        prog_id: id,
        ..Default::default()
    };
    // SAFETY: BPF_PROG_GET_FD_BY_ID reads the plain integers of `attr` only.
    let rc = unsafe { sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }?;
    owned_fd(rc)
}

/// The kernel's id of a loaded program.
pub fn prog_id(prog: BorrowedFd<'_>) -> io::Result<u32> {
    let mut info = ProgInfoHead::default();
    let mut attr = InfoByFdAttr {
        bpf_fd: fd_u32(prog),
        info_len: std::mem::size_of::<ProgInfoHead>() as u32,
        info: &mut info as *mut ProgInfoHead as u64,
    };
    // SAFETY: `info` points to a writable ProgInfoHead of `info_len` bytes
    // that outlives the call.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info.id)
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
        let mount = cgroup2_mount().expect("no cgroup2 mount in /proc/self/mountinfo");
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

    fn cgroup2_mount() -> Option<std::path::PathBuf> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        text.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split(' ').next()? != "cgroup2" {
                return None;
            }
            pre.split(' ').nth(4).map(std::path::PathBuf::from)
        })
    }
}
