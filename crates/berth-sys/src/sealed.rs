//! Running the runtime from a copy that cannot be written through
//! /proc/<pid>/exe (CVE-2019-5736).
//!
//! A process inside a container can reach the binary of any runtime process
//! that enters the container through `/proc/<pid>/exe`. If that is the host's
//! binary, a container could overwrite it. Before berth places a process into
//! a container it re-executes itself from a read-only, detached bind mount of
//! its own binary (no copy is made), or, where the new mount API is missing,
//! from a sealed memfd copy.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

/// True when the running binary cannot be written: it lives on a read-only
/// mount or is a write-sealed memfd.
pub fn is_protected() -> io::Result<bool> {
    let f = std::fs::File::open("/proc/self/exe")?;
    let vfs = nix::sys::statvfs::fstatvfs(&f).map_err(io::Error::from)?;
    if vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
        return Ok(true);
    }
    // SAFETY: F_GET_SEALS reads flags of a descriptor we own.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    Ok(seals >= 0 && seals & libc::F_SEAL_WRITE != 0)
}

fn readonly_bind() -> io::Result<OwnedFd> {
    protected_bind(Path::new("/proc/self/exe"))
}

/// A read-only, detached bind mount of the program at `path`: executing
/// it through `/proc/self/fd/N` starts a process that is protected from
/// the start (no re-execution needed).
pub fn protected_bind(path: &Path) -> io::Result<OwnedFd> {
    let tree = crate::mount::open_tree_clone(path, false)?;
    crate::mount::set_attr(
        tree.as_fd(),
        crate::mount::MOUNT_ATTR_RDONLY
            | crate::mount::MOUNT_ATTR_NODEV
            | crate::mount::MOUNT_ATTR_NOSUID,
        0,
        false,
    )?;
    Ok(tree)
}

fn sealed_memfd() -> io::Result<OwnedFd> {
    // SAFETY: memfd_create with a valid C string literal.
    let rc = unsafe {
        libc::memfd_create(
            c"berth-runtime".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel.
    let fd = unsafe { OwnedFd::from_raw_fd(rc) };
    let mut dst = std::fs::File::from(fd);
    let mut src = std::fs::File::open("/proc/self/exe")?;
    io::copy(&mut src, &mut dst)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS on a memfd we own.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(dst))
}

/// Re-execute the current program, same arguments and environment, from a
/// protected copy of itself, unless it already runs from one. Returns only
/// when no re-execution was needed, or on error.
pub fn ensure_protected() -> io::Result<()> {
    if is_protected()? {
        return Ok(());
    }
    let fd = readonly_bind().or_else(|_| sealed_memfd())?;
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(OsString::into_vec(a)))
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let envp: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    Err(crate::process::execveat_fd(fd.as_fd(), &argv, &envp))
}
