//! cgroups v1, v2 and hybrid hosts. (stub: being written)

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup: {0}")]
    Invalid(String),
}

impl CgroupError {
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, CgroupError::Invalid(_))
    }
}

/// One hierarchy as the container should see it when it mounts `cgroup`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CgroupMount {
    /// "unified" for v2, else the v1 hierarchy's controllers joined by ','.
    pub name: String,
    /// The container's cgroup directory on the host.
    pub host_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Stats {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn resolve(path: Option<&Path>, id: &str) -> Result<Cgroup, CgroupError> {
        Ok(Cgroup {
            path: path.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(format!("/berth/{id}"))),
        })
    }
    pub fn validate(_res: &LinuxResources) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn create(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn apply(&self, _res: &LinuxResources) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn add_process(&self, _pid: i32) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn freeze(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn thaw(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(false)
    }
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        Ok(vec![])
    }
    pub fn signal_all(&self, _sig: i32) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn destroy(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        Ok(Stats::default())
    }
    pub fn is_v2(&self) -> bool {
        false
    }
    pub fn mounts(&self) -> Vec<CgroupMount> {
        vec![]
    }
}
