//! The filesystem-context half of the new mount API, which nix does not wrap:
//! fsopen, fsconfig, fsmount and move_mount.
//!
//! A mount is built as a file descriptor: open a context for a filesystem
//! type, set its parameters one by one (each a separate call, so no page-size
//! limit on the whole option string), create the superblock, turn it into a
//! detached mount, and move that onto a path. The kernel keeps messages about
//! what went wrong in the context; [`FsContext::messages`] reads them.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const FSOPEN_CLOEXEC: u32 = 0x1;
const FSMOUNT_CLOEXEC: u32 = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_SET_FD: u32 = 5;
const FSCONFIG_CMD_CREATE: u32 = 6;

/// The longest string value `fsconfig(FSCONFIG_SET_STRING)` accepts, in
/// bytes without the terminating NUL (the kernel copies at most 256 bytes).
pub const FSCONFIG_MAX_STRING: usize = 255;

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A filesystem context: the descriptor `fsopen` returns.
#[derive(Debug)]
pub struct FsContext {
    fd: OwnedFd,
}

impl FsContext {
    /// Open a context for the filesystem type `fstype` (e.g. `overlay`).
    /// Fails with ENOSYS on kernels before 5.2 and ENODEV when the
    /// filesystem type is unknown.
    pub fn open(fstype: &str) -> io::Result<FsContext> {
        let name = cstr(OsStr::new(fstype))?;
        // SAFETY: `name` is a valid NUL-terminated string alive for the call.
        let rc = check(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?;
        // SAFETY: a fresh descriptor returned by the kernel, owned by us now.
        let fd = unsafe { OwnedFd::from_raw_fd(rc as RawFd) };
        Ok(FsContext { fd })
    }

    fn config(
        &self,
        cmd: u32,
        key: Option<&CString>,
        value: *const libc::c_void,
        aux: libc::c_int,
    ) -> io::Result<()> {
        let key_ptr = key.map_or(std::ptr::null(), |k| k.as_ptr());
        // SAFETY: `key_ptr` is null or points to a NUL-terminated string the
        // caller keeps alive; `value` is null, or a NUL-terminated string
        // alive for the call, as `cmd` requires.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                cmd,
                key_ptr,
                value,
                aux,
            )
        })?;
        Ok(())
    }

    /// Set a string parameter (`FSCONFIG_SET_STRING`). Values longer than
    /// [`FSCONFIG_MAX_STRING`] bytes are refused by the kernel with EINVAL.
    pub fn set_string(&self, key: &str, value: &OsStr) -> io::Result<()> {
        let k = cstr(OsStr::new(key))?;
        let v = cstr(value)?;
        self.config(FSCONFIG_SET_STRING, Some(&k), v.as_ptr().cast(), 0)
    }

    /// Set a flag parameter (`FSCONFIG_SET_FLAG`), such as `ro`.
    pub fn set_flag(&self, key: &str) -> io::Result<()> {
        let k = cstr(OsStr::new(key))?;
        self.config(FSCONFIG_SET_FLAG, Some(&k), std::ptr::null(), 0)
    }

    /// Set a parameter to an open file (`FSCONFIG_SET_FD`), for filesystems
    /// that take a descriptor in place of a path.
    pub fn set_fd(&self, key: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        let k = cstr(OsStr::new(key))?;
        self.config(FSCONFIG_SET_FD, Some(&k), std::ptr::null(), fd.as_raw_fd())
    }

    /// Create the superblock from the parameters set so far
    /// (`FSCONFIG_CMD_CREATE`).
    pub fn create(&self) -> io::Result<()> {
        self.config(FSCONFIG_CMD_CREATE, None, std::ptr::null(), 0)
    }

    /// Turn the created superblock into a detached mount (`fsmount`) with
    /// the given `MOUNT_ATTR_*` flags (see [`crate::mount`]).
    pub fn mount(&self, attr_flags: u64) -> io::Result<OwnedFd> {
        let attrs =
            u32::try_from(attr_flags).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: plain integer arguments; the kernel returns a new descriptor.
        let rc = check(unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.fd.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attrs,
            )
        })?;
        // SAFETY: a fresh descriptor returned by the kernel, owned by us now.
        Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
    }

    /// Drain the messages the kernel logged in this context, each without
    /// its `e `/`w `/`i ` severity prefix. Empty when there are none.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        // The kernel keeps at most 8 messages; the bound only guards
        // against a kernel that keeps answering.
        for _ in 0..64 {
            match nix::unistd::read(self.fd.as_fd(), &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    let msg = msg.trim_end();
                    let msg = msg
                        .strip_prefix("e ")
                        .or_else(|| msg.strip_prefix("w "))
                        .or_else(|| msg.strip_prefix("i "))
                        .unwrap_or(msg);
                    out.push(msg.to_string());
                }
            }
        }
        out
    }
}

impl AsFd for FsContext {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Attach the detached mount `mnt` (from [`FsContext::mount`] or
/// [`crate::mount::open_tree_clone`]) at `target` (`move_mount`).
pub fn move_mount_to(mnt: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let t = cstr(target.as_os_str())?;
    // SAFETY: an empty C string literal and `t`, both alive for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}
