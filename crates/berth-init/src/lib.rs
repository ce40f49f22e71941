//! berth's init for `--init`: the program that plays the role tini
//! (docker-init) plays for Docker.
//!
//! A container started with `--init` gets this program bind-mounted read-only
//! at `/sbin/docker-init`, and its process runs as
//! `/sbin/docker-init -- CMD ARGS...` (the `--` is optional). As PID 1 the
//! program:
//!
//! - forks CMD in a new process group (made the terminal's foreground group
//!   when stdin is a terminal), looking it up in `PATH` like `execvp` when it
//!   has no `/`; if CMD cannot be executed it prints
//!   `docker-init: exec CMD failed: ENAME` and the exit status is 127 for
//!   ENOENT, 126 otherwise;
//! - forwards every signal it receives, except SIGCHLD, to CMD;
//! - reaps every exited child, orphaned grandchildren included (it is a child
//!   subreaper, so this holds even when it is not PID 1);
//! - exits with CMD's exit status, or 128+N if CMD was killed by signal N.
//!
//! Without a command it prints a usage line and exits with 2.
//!
//! The program (`init/init.rs`) is a static executable of a few KiB with no
//! libc, built by this crate's `build.rs` with rustc alone, for x86_64 and
//! aarch64 Linux.

/// The init program's bytes (a static ELF executable of a few KiB, to be
/// written to a file with mode 0755 and bind-mounted at `/sbin/docker-init`),
/// or `None` on architectures it is not written for, where `--init` is not
/// available.
pub fn program() -> Option<&'static [u8]> {
    const PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/init"));
    if PROGRAM.is_empty() {
        None
    } else {
        Some(PROGRAM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn program_is_a_small_static_elf() {
        let p = program().expect("built for this architecture");
        assert_eq!(&p[..4], b"\x7fELF");
        assert!(p.len() < 16 * 1024, "{} bytes", p.len());
    }

    #[test]
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn program_is_not_available() {
        assert!(program().is_none());
    }
}
