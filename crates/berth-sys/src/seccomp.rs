//! Installing a seccomp filter given as a classic BPF program (what
//! libseccomp compiles a filter into), without libseccomp.

use std::io;

/// `SECCOMP_FILTER_FLAG_*` bits for [`set_filter`].
pub const FLAG_TSYNC: u32 = 1;
pub const FLAG_LOG: u32 = 2;
pub const FLAG_SPEC_ALLOW: u32 = 4;
pub const FLAG_WAIT_KILLABLE_RECV: u32 = 32;

/// Size of one BPF instruction (`struct sock_filter`).
pub const INSN_SIZE: usize = 8;

/// Install `program` (a whole number of 8-byte `struct sock_filter`
/// instructions) as a seccomp filter of the calling thread
/// (`seccomp(SECCOMP_SET_MODE_FILTER, flags, …)`). Needs no_new_privs or
/// CAP_SYS_ADMIN, as the kernel requires.
pub fn set_filter(program: &[u8], flags: u32) -> io::Result<()> {
    if program.is_empty()
        || !program.len().is_multiple_of(INSN_SIZE)
        || program.len() / INSN_SIZE > 4096
    {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // The kernel reads the instructions through this pointer; copy them to
    // properly aligned storage first.
    let insns: Vec<libc::sock_filter> = program
        .chunks_exact(INSN_SIZE)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: insns.len() as libc::c_ushort,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `insns`, which outlives the call; the kernel
    // only reads it (and copies the program).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
