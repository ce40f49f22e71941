//! Network namespaces kept by a bind mount of their nsfs file under the run
//! root, made and entered from a helper thread so that the calling thread
//! (and the rest of the process) stays in the host's namespace.

use crate::{NetError, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

fn ns_err(what: &str, path: &Path, e: impl std::fmt::Display) -> NetError {
    NetError::Netns(format!("{what} {}: {e}", path.display()))
}

/// Make a new network namespace, kept at `path` (a bind mount of its
/// nsfs file), and run `f` inside it on a helper thread. The namespace's
/// descriptor is returned with `f`'s result.
pub fn create<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<(OwnedFd, T)> {
    let (ns, out) = on_thread(|| {
        let ns = unshare_net()?;
        Ok((ns, f()?))
    })?;
    keep(path, ns.as_fd())?;
    Ok((ns, out))
}

/// Move the calling thread into a new network namespace; its descriptor.
fn unshare_net() -> Result<OwnedFd> {
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetError::Netns(format!("unsharing a network namespace: {e}")))?;
    File::open("/proc/thread-self/ns/net")
        .map(OwnedFd::from)
        .map_err(|e| NetError::Netns(format!("opening a network namespace: {e}")))
}

/// Run `f` on a helper thread (whose namespaces `f` may change).
fn on_thread<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    joined(std::thread::scope(|s| s.spawn(f).join()))
}

/// A namespace thread's result, its panic an error.
fn joined<T>(r: std::thread::Result<Result<T>>) -> Result<T> {
    r.unwrap_or_else(|_| {
        Err(NetError::Netns(
            "a network namespace thread panicked".into(),
        ))
    })
}

/// A new network namespace with only `lo`, up (Docker's `none` network,
/// or the start of a bridge container's), made on its own thread while
/// the caller does other work; nothing keeps it but the descriptor
/// [`Pending::wait`] returns.
pub struct Pending(std::thread::JoinHandle<Result<OwnedFd>>);

impl Pending {
    pub fn spawn() -> Pending {
        // Beside its spawner, which goes on opening the store.
        Pending(berth_sys::process::spawn_elsewhere(|| {
            let ns = unshare_net()?;
            let mut nl = crate::netlink::Netlink::open()?;
            if let Some(lo) = nl.link_index("lo")? {
                nl.set_up(lo)?;
            }
            Ok(ns)
        }))
    }

    pub fn wait(self) -> Result<OwnedFd> {
        joined(self.0.join())
    }
}

/// Keep the namespace `ns` at `path` (a bind mount of it), as [`create`]
/// does for the ones it makes.
pub fn keep(path: &Path, ns: BorrowedFd<'_>) -> Result<()> {
    use std::os::fd::AsRawFd;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ns_err("creating", dir, e))?;
    }
    File::create(path).map_err(|e| ns_err("creating", path, e))?;
    mount(
        Some(format!("/proc/self/fd/{}", ns.as_raw_fd()).as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        remove(path);
        ns_err("binding the network namespace at", path, e)
    })
}

/// Open the namespace kept at `path`.
pub fn open(path: &Path) -> Result<OwnedFd> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| ns_err("opening", path, e))
}

/// Run `f` inside the network namespace `ns`, on a helper thread.
pub fn enter<T: Send>(ns: BorrowedFd<'_>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    on_thread(|| {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetError::Netns(format!("entering a network namespace: {e}")))?;
        f()
    })
}

/// Drop the namespace kept at `path` (it goes when nothing else holds it).
/// Missing is fine.
pub fn remove(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}
