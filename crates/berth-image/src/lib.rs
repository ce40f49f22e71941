//! berth's images: Docker image references, the content-addressable blob
//! store, OCI and Docker manifests, and layers applied to (and diffed from)
//! directories in overlayfs form.
//!
//! Knows nothing of containers, networks or the database; prints nothing.

pub mod builtin;
pub mod digest;
pub mod layer;
pub mod layers;
pub mod manifest;
pub mod overlay;
pub mod reference;
pub mod store;
