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
