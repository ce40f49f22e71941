//! berth's own registry configuration.
//!
//! `<config dir>/daemon.json` (the config dir is `/etc/berth`, or
//! `BERTH_CONFIG_DIR`) takes Docker's daemon keys for registries:
//!
//! ```json
//! {"insecure-registries": ["registry.lan:5000"],
//!  "max-concurrent-downloads": 3, "max-concurrent-uploads": 5}
//! ```
//!
//! An insecure registry, and as with Docker any registry on a loopback
//! address, is tried over HTTPS first and then over plain HTTP. CA
//! certificates for one registry are the `*.crt` files in
//! `<config dir>/certs.d/<host[:port]>/` (or Docker's
//! `/etc/docker/certs.d/<host[:port]>/`), added to the system's roots.
//! `BERTH_REGISTRY_TIMEOUT` (seconds) bounds each connect, read and write.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    pub config_dir: PathBuf,
    pub insecure: Vec<String>,
    pub timeout: Duration,
    /// Layers downloaded at once.
    pub downloads: usize,
    /// Layers uploaded at once.
    pub uploads: usize,
    /// Blobs larger than this are uploaded in chunks of this size.
    pub chunk_size: u64,
}

#[derive(serde::Deserialize, Default)]
struct DaemonJson {
    #[serde(rename = "insecure-registries", default)]
    insecure: Vec<String>,
    #[serde(rename = "max-concurrent-downloads")]
    downloads: Option<usize>,
    #[serde(rename = "max-concurrent-uploads")]
    uploads: Option<usize>,
    #[serde(rename = "registry-upload-chunk-size")]
    chunk_size: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            config_dir: PathBuf::from("/etc/berth"),
            insecure: Vec::new(),
            timeout: Duration::from_secs(30),
            downloads: 3,
            uploads: 5,
            chunk_size: 256 << 20,
        }
    }
}

impl Settings {
    /// Read `daemon.json` of the config dir (a missing file is the
    /// defaults; a broken one an error naming it).
    pub fn load() -> Result<Settings, String> {
        let dir = std::env::var_os("BERTH_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/berth"));
        Settings::load_from(&dir)
    }

    pub fn load_from(dir: &Path) -> Result<Settings, String> {
        let mut s = Settings {
            config_dir: dir.to_path_buf(),
            ..Settings::default()
        };
        let path = dir.join("daemon.json");
        let parsed: DaemonJson = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("{}: invalid configuration: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DaemonJson::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        s.insecure = parsed.insecure;
        if let Some(n) = parsed.downloads.filter(|n| *n > 0) {
            s.downloads = n;
        }
        if let Some(n) = parsed.uploads.filter(|n| *n > 0) {
            s.uploads = n;
        }
        if let Some(n) = parsed.chunk_size.filter(|n| *n > 0) {
            s.chunk_size = n;
        }
        if let Some(t) = std::env::var("BERTH_REGISTRY_TIMEOUT")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|t| *t > 0.0)
        {
            s.timeout = Duration::from_secs_f64(t);
        }
        Ok(s)
    }

    /// Whether `host` (`name[:port]`) may be reached over plain HTTP:
    /// listed as insecure (with or without its port), or a loopback name.
    pub fn is_insecure(&self, host: &str) -> bool {
        let name = host_name(host);
        if name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
        {
            return true;
        }
        self.insecure.iter().any(|i| {
            let i = i
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            i == host || i == name
        })
    }

    /// The `certs.d` directories that may hold CA certificates for `host`.
    pub fn cert_dirs(&self, host: &str) -> Vec<PathBuf> {
        vec![
            self.config_dir.join("certs.d").join(host),
            PathBuf::from("/etc/docker/certs.d").join(host),
        ]
    }

    /// TLS client configuration for `host`: the system's roots plus the
    /// registry's own CA certificates.
    pub fn tls_config(&self, host: &str) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for c in native.certs {
            let _ = roots.add(c);
        }
        for dir in self.cert_dirs(host) {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "crt"))
                .collect();
            files.sort();
            for f in files {
                let pem = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                let mut any = false;
                for cert in <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| format!("{}: {e}", f.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", f.display()))?;
                    any = true;
                }
                if !any {
                    return Err(format!("{}: no PEM certificate in it", f.display()));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// `host` without its port (`[::1]:5000` → `::1`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((n, p)) if p.chars().all(|c| c.is_ascii_digit()) => n,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_are_insecure() {
        let mut s = Settings::default();
        assert!(s.is_insecure("localhost:5000"));
        assert!(s.is_insecure("127.0.0.1:5000"));
        assert!(s.is_insecure("127.8.9.1"));
        assert!(s.is_insecure("[::1]:5000"));
        assert!(!s.is_insecure("registry.lan:5000"));
        assert!(!s.is_insecure("ghcr.io"));
        s.insecure = vec!["registry.lan:5000".into(), "http://other.lan".into()];
        assert!(s.is_insecure("registry.lan:5000"));
        assert!(!s.is_insecure("registry.lan:6000"));
        assert!(s.is_insecure("other.lan:7000"));
    }

    #[test]
    fn daemon_json_is_read_and_a_broken_one_named() {
        let d = tempfile::tempdir().unwrap();
        let s = Settings::load_from(d.path()).unwrap();
        assert_eq!(s.downloads, 3);
        std::fs::write(
            d.path().join("daemon.json"),
            r#"{"insecure-registries":["r.lan:5000"],"max-concurrent-downloads":5}"#,
        )
        .unwrap();
        let s = Settings::load_from(d.path()).unwrap();
        assert_eq!(s.downloads, 5);
        assert_eq!(s.insecure, vec!["r.lan:5000"]);
        std::fs::write(d.path().join("daemon.json"), "{").unwrap();
        let e = Settings::load_from(d.path()).unwrap_err();
        assert!(e.contains("daemon.json: invalid configuration"), "{e}");
    }

    #[test]
    fn certs_d_must_hold_certificates() {
        let d = tempfile::tempdir().unwrap();
        let s = Settings::load_from(d.path()).unwrap();
        assert!(s.tls_config("r.lan:5000").is_ok());
        let dir = d.path().join("certs.d/r.lan:5000");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), "not a certificate").unwrap();
        let e = s.tls_config("r.lan:5000").unwrap_err();
        assert!(e.contains("ca.crt"), "{e}");
    }
}
