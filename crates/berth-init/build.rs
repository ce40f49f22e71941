//! Builds the init program (init/init.rs) with rustc alone: no_std, no libc,
//! statically linked, a few KiB. src/lib.rs embeds the bytes.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "init/init.rs";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("init");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "x86_64" && arch != "aarch64" {
        // No init for this architecture: an empty program marks it.
        std::fs::write(&out, b"").expect("write OUT_DIR/init");
        return;
    }
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let status = Command::new(rustc)
        .args([
            "--edition=2021",
            "--crate-type=bin",
            "--target",
            &target,
            "-Cpanic=abort",
            "-Copt-level=s",
            "-Cstrip=symbols",
            "-Crelocation-model=static",
            "-Clink-arg=-nostartfiles",
            "-Clink-arg=-nostdlib",
            "-Clink-arg=-static",
            "-Clink-arg=-Wl,--build-id=none",
            "-o",
        ])
        .arg(&out)
        .arg(src)
        .status()
        .expect("run rustc for the init program");
    assert!(status.success(), "building {src} failed");
}
