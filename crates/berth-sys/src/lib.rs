//! Safe wrappers over the Linux calls berth needs.
//!
//! This is the one crate of berth with `unsafe` code; every block carries a
//! `// SAFETY:` comment. Everything else in berth builds on these wrappers,
//! on `nix` and on `libc` constants.

pub mod bpf;
pub mod fd;
pub mod mount;
pub mod mountfd;
pub mod process;
pub mod pty;
pub mod sealed;
pub mod seccomp;
pub mod xattr;
