//! The new mount API calls that nix does not wrap (open_tree, mount_setattr),
//! and where the cgroup2 hierarchy's root is mounted.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

pub const OPEN_TREE_CLONE: u32 = 1;
pub const AT_RECURSIVE: u32 = 0x8000;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Where the root of the cgroup2 hierarchy is mounted in this mount
/// namespace (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid
/// host), from /proc/self/mountinfo; `None` without one.
pub fn cgroup2_root() -> Option<PathBuf> {
    cgroup2_root_in(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

fn cgroup2_root_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let f: Vec<&str> = pre.split(' ').collect();
        let whole = post.split(' ').next()? == "cgroup2" && f.get(3) == Some(&"/");
        whole
            .then(|| f.get(4).map(|p| PathBuf::from(unescape(p))))
            .flatten()
    })
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &str) -> std::ffi::OsString {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// Clone the mount at `path` into a detached mount tree (open_tree with
/// OPEN_TREE_CLONE); `recursive` takes its submounts too.
pub fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: `c` is a valid C string for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel, owned by us now.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Set and clear mount attributes (MOUNT_ATTR_*) on the mount `fd` refers to.
pub fn set_attr(fd: BorrowedFd<'_>, set: u64, clear: u64, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: an empty C string literal and a properly laid out mount_attr,
    // both alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_root_is_found_unescaped_and_not_a_bind_of_a_subtree() {
        let hybrid = "30 23 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
            40 31 0:38 /sub /mnt/sub rw - cgroup2 cgroup2 rw\n\
            41 31 0:38 / /sys/fs/cgroup/my\\040dir rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_root_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/my dir"))
        );
        assert_eq!(
            cgroup2_root_in("22 27 0:21 / /proc rw - proc proc rw\n"),
            None
        );
    }
}
