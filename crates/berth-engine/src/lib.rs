//! berth's engine: the state every `berth` command shares, kept in SQLite
//! (`berth.db`, WAL) beside the content it describes.
//!
//! Today it holds the image metadata: images, their tags and layers, and
//! which blobs and layers they reference (so that garbage collection can
//! remove what nothing references). Containers, volumes and networks join it
//! in later issues.

pub mod archive;
pub mod changes;
pub mod config;
pub mod container_fs;
pub mod containers;
pub mod db;
pub mod images;
pub mod monitor_proto;
pub mod networks;
pub mod pull;
pub mod push;
pub mod save;
pub mod seccomp_default;
pub mod spec;
#[cfg(test)]
mod testutil;
pub mod volumes;

pub use db::{Db, DbError, ImageRecord, LayerRecord};
pub use images::{ImageError, ImageStore, NewImage, NewLayer, Removal};

/// 64 random hex digits (container IDs, anonymous volume names), from the
/// kernel's random pool.
pub(crate) fn random_hex() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
