//! Images built into berth, available without any network.

/// The hello-world program (a static executable of a few KiB, built from
/// hello/hello.rs), or empty on architectures it is not written for.
pub const HELLO_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_is_a_small_static_elf() {
        assert_eq!(&HELLO_PROGRAM[..4], b"\x7fELF");
        assert!(
            HELLO_PROGRAM.len() < 64 * 1024,
            "{} bytes",
            HELLO_PROGRAM.len()
        );
        // Runs on the host too: it needs nothing but the kernel.
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("hello");
        std::fs::write(&exe, HELLO_PROGRAM).unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = std::process::Command::new(&exe).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Hello from berth!"), "{text}");
        assert!(text.contains("its hostname is "), "{text}");
    }
}

/// An image assembled from built-in bytes: its config and its one layer
/// (an uncompressed tar), both deterministic so that the image ID is the
/// same on every machine of one architecture.
pub struct BuiltinImage {
    pub name: &'static str,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
}

/// Built-in images by their normalised reference.
pub fn lookup(reference: &str) -> Option<BuiltinImage> {
    match reference {
        "docker.io/library/hello-world:latest" if !HELLO_PROGRAM.is_empty() => Some(hello_world()),
        _ => None,
    }
}

/// A fixed time for everything in built-in images (2026-01-01T00:00:00Z).
const EPOCH: u64 = 1_767_225_600;

fn hello_world() -> BuiltinImage {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("hello").expect("a short relative path");
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(EPOCH);
    h.set_size(HELLO_PROGRAM.len() as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.append(&h, HELLO_PROGRAM).expect("writing to a Vec");
    let layer = tar.into_inner().expect("writing to a Vec");
    let diff_id = crate::digest::Digest::sha256_of(&layer);
    let platform = crate::manifest::host_platform();
    let config = serde_json::json!({
        "architecture": platform.architecture().to_string(),
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {
            "Cmd": ["/hello"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/"
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{
            "created": "2026-01-01T00:00:00Z",
            "created_by": "berth built-in hello-world: COPY hello / ; CMD [\"/hello\"]"
        }]
    });
    let config = crate::manifest::canonical_json(&config).expect("plain JSON values");
    BuiltinImage {
        name: "docker.io/library/hello-world:latest",
        config,
        layer,
    }
}

#[cfg(test)]
mod image_tests {
    use super::*;

    #[test]
    fn hello_world_image_is_deterministic_and_valid() {
        let a = lookup("docker.io/library/hello-world:latest").unwrap();
        let b = lookup("docker.io/library/hello-world:latest").unwrap();
        assert_eq!(a.config, b.config);
        assert_eq!(a.layer, b.layer);
        let cfg = crate::manifest::parse_config(&a.config).unwrap();
        crate::manifest::check_config(&cfg).unwrap();
        let ids = crate::manifest::diff_ids(&cfg).unwrap();
        assert_eq!(ids, vec![crate::digest::Digest::sha256_of(&a.layer)]);
        assert!(lookup("docker.io/library/busybox:latest").is_none());
    }
}
