//! berth's built-in `hello-world` image program: a tiny static executable
//! with no libc, talking to the kernel directly. It shows that it runs
//! isolated: its PID, its hostname and the root directory it sees.
//!
//! Built by crates/berth-image/build.rs with rustc alone (no_std, no_main); it is a
//! payload shipped inside the image, not part of berth's libraries, which is
//! why its raw syscalls live here and not in berth-sys.

#![no_std]
#![no_main]

#[cfg(target_arch = "x86_64")]
mod sys {
    pub const WRITE: usize = 1;
    pub const OPEN: usize = 2;
    pub const GETPID: usize = 39;
    pub const EXIT: usize = 60;
    pub const UNAME: usize = 63;
    pub const GETDENTS64: usize = 217;

    /// # Safety
    /// The arguments must be valid for syscall `n`.
    pub unsafe fn call3(n: usize, a: usize, b: usize, c: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller passes arguments valid for `n`; rcx and r11 are
        // clobbered by the syscall instruction.
        unsafe {
            core::arch::asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a, in("rsi") b,
                in("rdx") c, lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret
    }
}

#[cfg(target_arch = "aarch64")]
mod sys {
    pub const WRITE: usize = 64;
    pub const OPENAT: usize = 56;
    pub const GETPID: usize = 172;
    pub const EXIT: usize = 93;
    pub const UNAME: usize = 160;
    pub const GETDENTS64: usize = 61;

    /// # Safety
    /// The arguments must be valid for syscall `n`.
    pub unsafe fn call3(n: usize, a: usize, b: usize, c: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller passes arguments valid for `n`.
        unsafe {
            core::arch::asm!("svc 0", in("x8") n, inlateout("x0") a as isize => ret, in("x1") b,
                in("x2") c, options(nostack));
        }
        ret
    }
}

fn write(s: &[u8]) {
    // SAFETY: a valid buffer and its length.
    unsafe { sys::call3(sys::WRITE, 1, s.as_ptr() as usize, s.len()) };
}

fn exit(code: usize) -> ! {
    // SAFETY: exit takes an integer and does not return.
    unsafe { sys::call3(sys::EXIT, code, 0, 0) };
    loop {}
}

fn write_num(mut n: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    write(&buf[i..]);
}

fn cstr_len(s: &[u8]) -> usize {
    s.iter().position(|&b| b == 0).unwrap_or(s.len())
}

fn open_root() -> isize {
    const O_RDONLY_DIRECTORY: usize = 0o200000;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a NUL-terminated path literal.
    return unsafe { sys::call3(sys::OPEN, b"/\0".as_ptr() as usize, O_RDONLY_DIRECTORY, 0) };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: AT_FDCWD and a NUL-terminated path literal.
    return unsafe { sys::call3(sys::OPENAT, -100isize as usize, b"/\0".as_ptr() as usize, O_RDONLY_DIRECTORY) };
}

// The kernel enters _start with the stack 16-byte aligned and no return
// address; Rust code expects the alignment of a call, so make one.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "xor rbp, rbp",
    "and rsp, -16",
    "call hello_main",
    "ud2",
);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, #0",
    "mov x30, #0",
    "bl hello_main",
    "brk #0",
);

#[no_mangle]
pub extern "C" fn hello_main() -> ! {
    write(b"\nHello from berth!\n");
    write(b"This message shows that your installation appears to be working correctly.\n\n");
    write(b"This program runs in a container, isolated from the host:\n");
    write(b"  its process ID is ");
    // SAFETY: getpid takes no arguments.
    write_num(unsafe { sys::call3(sys::GETPID, 0, 0, 0) } as usize);
    write(b" (the first process of its own PID namespace)\n");
    // struct utsname: six 65-byte fields; nodename is the second.
    let mut uts = [0u8; 65 * 6];
    // SAFETY: uname writes into the buffer, which is large enough.
    if unsafe { sys::call3(sys::UNAME, uts.as_mut_ptr() as usize, 0, 0) } == 0 {
        let node = &uts[65..130];
        write(b"  its hostname is ");
        write(&node[..cstr_len(node)]);
        write(b"\n");
    }
    write(b"  its root directory holds:");
    let fd = open_root();
    if fd >= 0 {
        let mut buf = [0u8; 2048];
        loop {
            // SAFETY: getdents64 fills the buffer we own, up to its length.
            let n = unsafe { sys::call3(sys::GETDENTS64, fd as usize, buf.as_mut_ptr() as usize, buf.len()) };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            while off + 19 < n as usize {
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                let name = &buf[off + 19..off + reclen];
                let name = &name[..cstr_len(name)];
                if name != b"." && name != b".." {
                    write(b" ");
                    write(name);
                }
                off += reclen;
                if reclen == 0 {
                    break;
                }
            }
        }
    }
    write(b"\n\nTo try something more ambitious, run a shell in a container:\n");
    write(b"  berth run -it debian bash\n\n");
    exit(0)
}

/// Zeroed buffers compile to memset calls, and there is no libc to supply it.
///
/// # Safety
/// `dst` must be valid for `n` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller guarantees `dst..dst+n` is writable; a volatile
        // write keeps the compiler from turning this loop into memset again.
        unsafe { core::ptr::write_volatile(dst.add(i), c as u8) };
    }
    dst
}

/// libcore refers to it; with panic=abort it is never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(101)
}
