//! Extended attributes, by descriptor and by path without following a final
//! symlink (nix has no xattr calls).
//!
//! Names are raw bytes (`security.capability`, `trusted.overlay.opaque`);
//! a name with a NUL byte is refused with `EINVAL`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::ssize_t) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        // rc is non-negative here, so the conversion is lossless.
        Ok(rc as usize)
    }
}

/// Set `name` to `value` on the object behind `fd` (not an O_PATH descriptor).
pub fn fset(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated and `value` is a valid slice of
    // `value.len()` bytes; both outlive the call.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set `name` to `value` on `path` itself: a final symlink is not followed.
pub fn lset(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let name = cstr(name)?;
    // SAFETY: both strings are NUL-terminated and `value` is a valid slice;
    // all outlive the call.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Remove `name` from `path` itself: a final symlink is not followed.
pub fn lremove(path: &Path, name: &[u8]) -> io::Result<()> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let name = cstr(name)?;
    // SAFETY: both strings are NUL-terminated and outlive the call.
    if unsafe { libc::lremovexattr(p.as_ptr(), name.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Split a NUL-separated name list.
fn split_names(buf: &[u8]) -> Vec<Vec<u8>> {
    buf.split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Call `f(buf)` (a list/get call that returns a length) with a buffer that
/// grows until the value fits.
fn grow(mut f: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut size = 256;
    loop {
        let mut buf = vec![0u8; size];
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && size < (1 << 24) => {
                // Ask for the size the value needs now (it may have grown).
                let need = f(&mut [])?;
                size = need.max(size * 2);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The names of the extended attributes of the object behind `fd`.
pub fn flist(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let buf = grow(|buf| {
        // SAFETY: `buf` is a valid writable slice of `buf.len()` bytes
        // (a zero length asks for the size only).
        check(unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
    })?;
    Ok(split_names(&buf))
}

/// The names of the extended attributes of `path` itself (no final symlink
/// is followed).
pub fn llist(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let buf = grow(|buf| {
        // SAFETY: `p` is NUL-terminated; `buf` is a valid writable slice.
        check(unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
    })?;
    Ok(split_names(&buf))
}

/// The value of `name` on the object behind `fd`.
pub fn fget(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    let name = cstr(name)?;
    grow(|buf| {
        // SAFETY: `name` is NUL-terminated; `buf` is a valid writable slice.
        check(unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })
    })
}

/// The value of `name` on `path` itself (no final symlink is followed).
pub fn lget(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let name = cstr(name)?;
    grow(|buf| {
        // SAFETY: both strings are NUL-terminated; `buf` is a valid
        // writable slice.
        check(unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn user_xattr_round_trip() {
        let dir = std::env::temp_dir().join(format!("berth-xattr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        let file = std::fs::File::create(&f).unwrap();
        match fset(file.as_fd(), b"user.berth", b"v") {
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            r => {
                r.unwrap();
                assert_eq!(fget(file.as_fd(), b"user.berth").unwrap(), b"v");
                assert!(flist(file.as_fd())
                    .unwrap()
                    .contains(&b"user.berth".to_vec()));
                lset(&f, b"user.big", &[7u8; 1000]).unwrap();
                assert_eq!(lget(&f, b"user.big").unwrap(), vec![7u8; 1000]);
                assert!(llist(&f).unwrap().contains(&b"user.big".to_vec()));
                lremove(&f, b"user.big").unwrap();
                assert!(!llist(&f).unwrap().contains(&b"user.big".to_vec()));
            }
        }
        assert!(fset(file.as_fd(), b"user.a\0b", b"").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
