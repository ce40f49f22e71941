//! berth's OCI distribution client.
//!
//! - [`settings`]: what berth's own configuration says about registries
//!   (insecure registries, `certs.d` CA certificates, timeouts, how many
//!   transfers run at once);
//! - [`creds`]: credentials in Docker's `config.json` format (`auths`, and
//!   `credsStore`/`credHelpers` through the `docker-credential-*` helpers);
//! - [`auth`]: `WWW-Authenticate` challenges (Bearer and Basic);
//! - [`client`]: one registry: the `/v2/` ping, the token flow, manifests
//!   and blobs, redirects to blob storage, uploads, retries.
//!
//! It prints nothing; the engine drives it (`berth-engine`'s `pull` and
//! `push`).

pub mod auth;
pub mod client;
pub mod creds;
pub mod settings;

pub use client::{Client, RegistryError};
pub use creds::Credential;
pub use settings::Settings;

/// The registry host that serves a reference's domain (Docker Hub's
/// `docker.io` is served by `registry-1.docker.io`).
pub fn registry_host(domain: &str) -> &str {
    if domain == berth_image::reference::DEFAULT_DOMAIN {
        "registry-1.docker.io"
    } else {
        domain
    }
}

/// The key credentials are stored under for a reference's domain (Docker
/// Hub's is the historical `https://index.docker.io/v1/`).
pub fn credential_key(domain: &str) -> String {
    if domain == berth_image::reference::DEFAULT_DOMAIN
        || domain == "index.docker.io"
        || domain == "registry-1.docker.io"
    {
        "https://index.docker.io/v1/".to_string()
    } else {
        domain.to_string()
    }
}
