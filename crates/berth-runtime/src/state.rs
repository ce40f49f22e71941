//! A container's persisted state: `<root>/<id>/state.json`, plus the exec
//! fifo that holds a created container until `start`.

use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.json";
pub const FIFO_FILE: &str = "exec.fifo";
pub const OCI_VERSION: &str = "1.2.1";

/// The lifecycle states of the runtime spec, plus runc's "paused".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What the runtime keeps about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    pub pid: i32,
    /// Start time of the init process (field 22 of /proc/<pid>/stat), to
    /// tell our process from a later one that reused its pid.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub cgroup: Cgroup,
    /// The namespaces the container made or joined, as /proc paths are not
    /// stable after init exits: kept to let `exec` know which to join.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub use_terminal: bool,
    /// Whether the spec has poststart and poststop hooks, so that `start`
    /// and `delete` read the saved spec only when it has some (`None` in
    /// a state written before this was kept: read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poststart_hooks: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poststop_hooks: Option<bool>,
}

/// The state as `runc state` prints it (the spec's state plus runc's fields).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateView {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
}

/// The spec's state object, given to hooks on stdin.
#[derive(Debug, Clone, Serialize)]
pub struct HookState<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: Status,
    pub pid: i32,
    pub bundle: &'a Path,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: &'a HashMap<String, String>,
}

/// The runtime's state root (`--root`).
#[derive(Debug, Clone)]
pub struct Root {
    pub dir: PathBuf,
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root { dir: dir.into() }
    }

    /// Compiled seccomp programs, by what they were compiled from.
    pub fn seccomp_cache(&self) -> PathBuf {
        self.dir.join(".seccomp")
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Every container id with a directory under the root, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
            Err(e) => return Err(Error::io(format!("{}", self.dir.display()), e)),
        };
        for entry in rd {
            let entry = entry.ctx(|| format!("{}", self.dir.display()))?;
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                // Dot names are the runtime's own (the seccomp cache).
                if let Some(name) = entry.file_name().to_str().filter(|n| !n.starts_with('.')) {
                    ids.push(name.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }
}

/// Write a file atomically: temp file in the same directory, then rename,
/// so a reader sees the old or the new content, never a part. No fsync:
/// runtime state is volatile (it lives under /run and means nothing after a
/// reboot), and a flush would cost a disk round trip per container.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    // A temporary name of this process and thread: two processes writing
    // the same file (a cache entry made by parallel starts) never write
    // into one temporary file, so each rename moves a whole file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut f = std::fs::File::create(&tmp).ctx(|| format!("{}", tmp.display()))?;
    f.write_all(data).ctx(|| format!("{}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).ctx(|| format!("{}", path.display()))
}

impl Saved {
    pub fn load(dir: &Path) -> Result<Option<Saved>> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| Error::Config {
                    path,
                    msg: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("{}", path.display()), e)),
        }
    }

    pub fn store(&self, dir: &Path) -> Result<()> {
        let data = serde_json::to_vec(self).map_err(|e| Error::Init(e.to_string()))?;
        write_atomic(&dir.join(STATE_FILE), &data)
    }
}

/// Start time of `pid` (clock ticks since boot), and whether it is a zombie
/// or dead; None when there is no such process.
pub fn proc_start(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, matches!(*state, "Z" | "X" | "x")))
}

/// Whether the container's init process (the one we started) still runs.
pub fn init_alive(saved: &Saved) -> bool {
    if saved.pid <= 0 {
        return false;
    }
    matches!(proc_start(saved.pid), Some((start, false)) if start == saved.pid_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time() {
        let me = std::process::id() as i32;
        let (start, zombie) = proc_start(me).unwrap();
        assert!(start > 0);
        assert!(!zombie);
        assert!(proc_start(i32::MAX).is_none());
    }
}
