//! File descriptors: close-on-exec sweeps and path resolution confined to a root.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Mark every descriptor numbered `from` or above close-on-exec, so that no
/// descriptor of the runtime leaks into the container's process.
pub fn cloexec_from(from: RawFd) -> io::Result<()> {
    let first = u32::try_from(from).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor
    // flags; it touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Old kernels: walk /proc/self/fd.
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        {
            if fd >= from {
                fds.push(fd);
            }
        }
    }
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number; a stale number (the
        // directory's own fd) just fails with EBADF, which we ignore.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Clear close-on-exec on one descriptor (for descriptors handed on to the
/// container on purpose, such as `--preserve-fds`).
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a plain descriptor number changes only its flags.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Open `path` as if `root` were `/`: `..` and absolute symlinks cannot
/// climb out of `root` (openat2 with RESOLVE_IN_ROOT).
pub fn open_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: `c` is a valid NUL-terminated string and `how` a properly
        // laid out open_how that outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if rc >= 0 {
            // SAFETY: the kernel returned a fresh descriptor that we now own.
            return Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
    }
}

/// The `/proc/self/fd/N` path of a descriptor, to hand an fd-resolved
/// object to calls that take paths (mount, chmod).
pub fn proc_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Send `data` with one descriptor attached (SCM_RIGHTS).
pub fn send_with_fd(sock: BorrowedFd<'_>, data: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    send_with_fds(sock, data, &[fd])
}

/// The most descriptors one message carries (the kernel's SCM_MAX_FD).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// Send all of `data` (not empty), the first bytes with up to [`MAX_FDS_PER_MESSAGE`] descriptors attached.
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let mut sent = 0;
    loop {
        // The descriptors go with the first bytes.
        let with = if sent == 0 && !raw.is_empty() {
            &cmsgs[..]
        } else {
            &[]
        };
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[io::IoSlice::new(&data[sent..])],
            with,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if sent >= data.len() {
            return Ok(());
        }
    }
}

/// Receive up to `buf.len()` bytes and at most one descriptor (SCM_RIGHTS).
pub fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut fds = Vec::new();
    let n = recv_with_fds(sock, buf, &mut fds)?;
    // Any more than one are closed as they drop.
    Ok((n, fds.into_iter().next()))
}

/// Receive up to `buf.len()` bytes; the descriptors that came with them
/// (up to [`MAX_FDS_PER_MESSAGE`]) are added to `fds`, close-on-exec.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let n = msg.bytes;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(got) = c {
            for fd in got {
                // SAFETY: the kernel installed this descriptor in our table
                // for this message; nothing else owns it yet.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok(n)
}

/// dup2 `fd` onto the descriptor number `target` (for stdio set-up).
pub fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    if fd.as_raw_fd() == target {
        return clear_cloexec(target);
    }
    // SAFETY: dup2 only changes the descriptor table; `target` is replaced
    // on purpose (stdio of a process about to exec).
    let rc = unsafe { libc::dup2(fd.as_raw_fd(), target) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Start writing back the dirty pages of a file without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that a later syncfs finds
/// most of the data on disk already. A hint: errors are returned for the
/// caller to ignore or log.
pub fn start_writeback(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: sync_file_range only reads the descriptor number and the
    // range; it touches no memory of ours.
    let rc = unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Take ownership of a descriptor this process inherited across exec
/// (passed by number, as a parent hands a pipe to a child it starts). The
/// descriptor is duplicated into a new close-on-exec one that is returned,
/// and the inherited number is closed. Call it early in `main`, once per
/// number, before anything else in the process could have adopted it.
pub fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_DUPFD_CLOEXEC only reads the descriptor table and makes a
    // new descriptor, which we own from here on.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just made by fcntl and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(new) };
    // SAFETY: the inherited number is, by this function's contract, owned
    // by nothing in this process; after the dup it is not needed.
    unsafe { libc::close(fd) };
    Ok(owned)
}

/// Close every descriptor from 3 up that is not in `keep`: the ones a
/// long-lived process inherited without asking (a caller's pipes), which
/// would otherwise stay open as long as it lives. Call it at start-up,
/// after taking the descriptors it needs ([`take_inherited`]).
pub fn close_inherited_except(keep: &[RawFd]) -> io::Result<()> {
    let mut doomed = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        if fd > 2 && !keep.contains(&fd) {
            doomed.push(fd);
        }
    }
    for fd in doomed {
        // SAFETY: by this function's contract nothing in the process owns
        // these descriptors (it runs before any are made, except `keep`);
        // the directory stream used to list them is closed by now, so one
        // of them going away is harmless (EBADF is ignored).
        unsafe { libc::close(fd) };
    }
    Ok(())
}
