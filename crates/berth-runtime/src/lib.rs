//! berth's OCI runtime (runtime-spec v1.2, Linux).
//!
//! A bundle directory holding `config.json` and a root filesystem becomes a
//! running container. The library follows the runc lifecycle: [`create`]
//! builds the namespaces, mounts and cgroup and leaves the container process
//! waiting; [`start`] releases it; [`kill`], [`state`], [`delete`],
//! [`exec`](crate::exec), `pause`/`resume` act on it afterwards.
//!
//! The library knows nothing of images, networks or a database. It prints
//! nothing: warnings go through `tracing`, failures are [`Error`] values.

pub mod caps;
pub mod cgroups;
pub mod config;
pub mod container;
pub mod error;
pub mod hooks;
pub mod init;
pub mod mounts;
pub mod seccomp;
pub mod signal;
pub mod spec;
pub mod state;
pub mod sync;

pub use container::*;
pub use error::{Error, ErrorKind, Result};
