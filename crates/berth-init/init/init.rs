//! berth's init for `--init` (the role tini/docker-init plays for Docker): a
//! tiny static executable with no libc, talking to the kernel directly. It is
//! bind-mounted into a container at /sbin/docker-init and started as PID 1:
//!
//!     docker-init [--] COMMAND [ARG...]
//!
//! It blocks every signal, forks COMMAND (looked up in PATH like execvp) in
//! its own process group, then loops: signals other than SIGCHLD are
//! forwarded to the child; on SIGCHLD (and every second) all exited children
//! are reaped, orphaned grandchildren included. When the child exits, init
//! exits with its status (128+N if it was killed by signal N). It also works
//! when it is not PID 1: it makes itself a child subreaper so that orphans
//! below it are still reparented to it and reaped.
//!
//! Built by crates/berth-init/build.rs with rustc alone (no_std, no_main); it
//! is a payload put into containers, not part of berth's libraries, which is
//! why its raw syscalls live here and not in berth-sys. No allocation: argv
//! and envp are used in place on the initial stack; buffers are fixed.

#![no_std]
#![no_main]

#[cfg(target_arch = "x86_64")]
mod sys {
    pub const WRITE: usize = 1;
    pub const RT_SIGACTION: usize = 13;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const IOCTL: usize = 16;
    pub const GETPID: usize = 39;
    pub const CLONE: usize = 56;
    pub const EXECVE: usize = 59;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const SETPGID: usize = 109;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const PRCTL: usize = 157;
    pub const EXIT_GROUP: usize = 231;

    /// # Safety
    /// The arguments must be valid for syscall `n`.
    pub unsafe fn call(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller passes arguments valid for `n`; rcx and r11 are
        // clobbered by the syscall instruction.
        unsafe {
            core::arch::asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a, in("rsi") b,
                in("rdx") c, in("r10") d, lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret
    }
}

#[cfg(target_arch = "aarch64")]
mod sys {
    pub const WRITE: usize = 64;
    pub const RT_SIGACTION: usize = 134;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const IOCTL: usize = 29;
    pub const GETPID: usize = 172;
    pub const CLONE: usize = 220;
    pub const EXECVE: usize = 221;
    pub const WAIT4: usize = 260;
    pub const KILL: usize = 129;
    pub const SETPGID: usize = 154;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const PRCTL: usize = 167;
    pub const EXIT_GROUP: usize = 94;

    /// # Safety
    /// The arguments must be valid for syscall `n`.
    pub unsafe fn call(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller passes arguments valid for `n`.
        unsafe {
            core::arch::asm!("svc 0", in("x8") n, inlateout("x0") a as isize => ret, in("x1") b,
                in("x2") c, in("x3") d, options(nostack));
        }
        ret
    }
}

// Constants with the same values on x86_64 and aarch64.
const SIGCHLD: usize = 17;
const SIG_SETMASK: usize = 2;
const SIGSET_SIZE: usize = 8;
const WNOHANG: usize = 1;
const PR_SET_CHILD_SUBREAPER: usize = 36;
const TIOCSPGRP: usize = 0x5410;
const EINTR: isize = 4;
const ENOENT: isize = 2;
const EACCES: isize = 13;
const ENOTDIR: isize = 20;
const ENODEV: isize = 19;
const ETIMEDOUT: isize = 110;
const ESTALE: isize = 116;
const ENAMETOOLONG: isize = 36;

const DEFAULT_PATH: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn exit(code: usize) -> ! {
    // SAFETY: exit_group takes an integer and does not return.
    unsafe { sys::call(sys::EXIT_GROUP, code, 0, 0, 0) };
    loop {} // not reached: exit_group does not return
}

/// Writes all of `s` to stderr, as far as the kernel lets us.
fn eprint(mut s: &[u8]) {
    while !s.is_empty() {
        // SAFETY: a valid buffer and its length.
        let n = unsafe { sys::call(sys::WRITE, 2, s.as_ptr() as usize, s.len(), 0) };
        if n == -EINTR {
            continue;
        }
        if n <= 0 {
            return;
        }
        s = &s[n as usize..];
    }
}

/// A one-line message assembled in a fixed buffer (truncated if too long),
/// so that it reaches stderr in one write.
struct Msg {
    buf: [u8; 512],
    len: usize,
}

impl Msg {
    fn new() -> Msg {
        Msg {
            buf: [0; 512],
            len: 0,
        }
    }

    fn push(&mut self, s: &[u8]) -> &mut Msg {
        for &b in s {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    /// An errno value as its name, or as a number for the rare ones.
    fn push_errno(&mut self, e: isize) -> &mut Msg {
        let name: &[u8] = match e {
            1 => b"EPERM",
            2 => b"ENOENT",
            5 => b"EIO",
            7 => b"E2BIG",
            8 => b"ENOEXEC",
            11 => b"EAGAIN",
            12 => b"ENOMEM",
            13 => b"EACCES",
            14 => b"EFAULT",
            20 => b"ENOTDIR",
            21 => b"EISDIR",
            22 => b"EINVAL",
            23 => b"ENFILE",
            24 => b"EMFILE",
            26 => b"ETXTBSY",
            36 => b"ENAMETOOLONG",
            40 => b"ELOOP",
            _ => {
                let mut digits = [0u8; 20];
                let mut i = digits.len();
                let mut n = e.unsigned_abs();
                loop {
                    i -= 1;
                    digits[i] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                return self.push(b"errno ").push(&digits[i..]);
            }
        };
        self.push(name)
    }

    fn print(&mut self) {
        self.push(b"\n");
        eprint(&self.buf[..self.len]);
    }
}

/// The bytes of a NUL-terminated string (without the NUL).
///
/// # Safety
/// `p` must point to a NUL-terminated string that lives for the rest of the
/// program (the kernel's copy of argv and envp on the initial stack does).
unsafe fn cstr(p: *const u8) -> &'static [u8] {
    let mut n = 0;
    // SAFETY: the caller guarantees the string is readable up to its NUL. A
    // volatile read keeps the compiler from turning this loop into a call to
    // strlen, which there is no libc to supply.
    while unsafe { core::ptr::read_volatile(p.add(n)) } != 0 {
        n += 1;
    }
    // SAFETY: the `n` bytes before the NUL were just read; they live on.
    unsafe { core::slice::from_raw_parts(p, n) }
}

/// The value of `name` in the NULL-terminated environment `envp`.
///
/// # Safety
/// `envp` must be the environment from the initial stack.
unsafe fn getenv(envp: *const *const u8, name: &[u8]) -> Option<&'static [u8]> {
    let mut i = 0;
    loop {
        // SAFETY: envp is NULL-terminated; we stop at the NULL.
        let p = unsafe { *envp.add(i) };
        if p.is_null() {
            return None;
        }
        // SAFETY: each entry is a NUL-terminated string on the initial stack.
        let entry = unsafe { cstr(p) };
        if entry.len() > name.len() && entry.starts_with(name) && entry[name.len()] == b'=' {
            return Some(&entry[name.len() + 1..]);
        }
        i += 1;
    }
}

/// execve(2): returns the errno (positive) if it returns at all.
///
/// # Safety
/// `path` must be NUL-terminated; `argv` and `envp` NULL-terminated arrays of
/// NUL-terminated strings.
unsafe fn execve(path: *const u8, argv: *const *const u8, envp: *const *const u8) -> isize {
    // SAFETY: the caller guarantees the pointers' validity.
    -unsafe { sys::call(sys::EXECVE, path as usize, argv as usize, envp as usize, 0) }
}

/// Runs argv[0] as execvp(3) does: directly if it contains a '/', otherwise
/// from each directory of PATH in turn (an empty entry means the current
/// directory). Returns the errno if nothing could be executed.
///
/// # Safety
/// As for `execve`, with argv[0] non-NULL.
unsafe fn execvp(argv: *const *const u8, envp: *const *const u8) -> isize {
    // SAFETY: argv[0] is a NUL-terminated string on the initial stack.
    let file = unsafe { cstr(*argv) };
    if file.is_empty() {
        return ENOENT;
    }
    if file.contains(&b'/') {
        // SAFETY: as guaranteed by the caller.
        return unsafe { execve(*argv, argv, envp) };
    }
    // SAFETY: envp is the environment from the initial stack.
    let path = unsafe { getenv(envp, b"PATH") }.unwrap_or(DEFAULT_PATH);
    let mut buf = [0u8; 4096];
    let mut err = ENAMETOOLONG;
    let mut eacces = false;
    for dir in path.split(|&b| b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let len = dir.len() + 1 + file.len();
        if len >= buf.len() {
            continue;
        }
        buf[..dir.len()].copy_from_slice(dir);
        buf[dir.len()] = b'/';
        buf[dir.len() + 1..len].copy_from_slice(file);
        buf[len] = 0;
        // SAFETY: buf is NUL-terminated at `len`; argv and envp as guaranteed.
        err = unsafe { execve(buf.as_ptr(), argv, envp) };
        match err {
            EACCES => eacces = true,
            ENOENT | ENOTDIR | ENODEV | ETIMEDOUT | ESTALE => {}
            _ => return err,
        }
    }
    if eacces {
        EACCES
    } else {
        err
    }
}

/// The forked child: its own process group (the terminal's foreground one if
/// stdin is a terminal), the original signal mask, then the command.
///
/// # Safety
/// As for `execvp`.
unsafe fn child(argv: *const *const u8, envp: *const *const u8, mask: &u64) -> ! {
    // As tini does. Errors are ignored: the command runs all the same. All
    // signals are still blocked, so tcsetpgrp from what is now a background
    // group is not stopped by SIGTTOU; without a terminal on stdin it fails
    // with ENOTTY.
    // SAFETY: setpgid and getpid take integers.
    let pid = unsafe {
        sys::call(sys::SETPGID, 0, 0, 0, 0);
        sys::call(sys::GETPID, 0, 0, 0, 0)
    } as i32;
    // SAFETY: TIOCSPGRP reads a pid_t from the pointer, which is valid.
    unsafe { sys::call(sys::IOCTL, 0, TIOCSPGRP, &pid as *const i32 as usize, 0) };
    // SAFETY: a valid sigset and its size; no old set is asked for.
    unsafe {
        sys::call(
            sys::RT_SIGPROCMASK,
            SIG_SETMASK,
            mask as *const u64 as usize,
            0,
            SIGSET_SIZE,
        )
    };
    // SAFETY: as guaranteed by the caller.
    let err = unsafe { execvp(argv, envp) };
    // SAFETY: argv[0] is a NUL-terminated string on the initial stack.
    let cmd = unsafe { cstr(*argv) };
    Msg::new()
        .push(b"docker-init: exec ")
        .push(cmd)
        .push(b" failed: ")
        .push_errno(err)
        .print();
    exit(if err == ENOENT { 127 } else { 126 })
}

/// Reaps every exited child. Returns the exit code for `child` if it was one
/// of them: its status, or 128+N if signal N killed it.
fn reap(child: isize) -> Option<usize> {
    let mut code = None;
    loop {
        let mut status: i32 = 0;
        // SAFETY: wait4 writes an int to the pointer, which is valid; no rusage.
        let pid = unsafe {
            sys::call(
                sys::WAIT4,
                -1isize as usize,
                &mut status as *mut i32 as usize,
                WNOHANG,
                0,
            )
        };
        if pid <= 0 {
            // 0: children remain but none has exited; ECHILD: none remain.
            return code;
        }
        if pid == child {
            let sig = (status & 0x7f) as usize;
            code = Some(if sig == 0 {
                ((status >> 8) & 0xff) as usize
            } else {
                128 + sig
            });
        }
    }
}

/// init's loop: wait for a signal (or a second), forward it to the child
/// unless it is SIGCHLD, reap, and leave when the child is gone.
fn parent(child: isize, set: &u64) -> ! {
    let timeout: [i64; 2] = [1, 0]; // struct timespec: 1 s
    loop {
        // SAFETY: a valid sigset, no siginfo wanted, a valid timespec.
        let sig = unsafe {
            sys::call(
                sys::RT_SIGTIMEDWAIT,
                set as *const u64 as usize,
                0,
                timeout.as_ptr() as usize,
                SIGSET_SIZE,
            )
        };
        if sig > 0 && sig as usize != SIGCHLD {
            // SAFETY: kill takes integers. An error (the child just exited)
            // needs no handling: the reap below sees it.
            unsafe { sys::call(sys::KILL, child as usize, sig as usize, 0, 0) };
        }
        if let Some(code) = reap(child) {
            exit(code);
        }
    }
}

// The kernel enters _start with the stack 16-byte aligned and no return
// address; Rust code expects the alignment of a call, so make one, passing
// the initial stack pointer (argc, argv..., NULL, envp..., NULL).
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "xor rbp, rbp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call init_main",
    "ud2",
);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, #0",
    "mov x30, #0",
    "mov x0, sp",
    "bl init_main",
    "brk #0",
);

/// # Safety
/// `sp` must be the initial stack pointer the kernel gave _start.
#[no_mangle]
pub unsafe extern "C" fn init_main(sp: *const usize) -> ! {
    // SAFETY: the initial stack holds argc, then argc argv pointers and a
    // NULL, then the environment pointers and a NULL.
    let (argc, argv) = unsafe { (*sp, sp.add(1) as *const *const u8) };
    // SAFETY: just past argv's NULL.
    let envp = unsafe { argv.add(argc + 1) };
    // SAFETY: the argument strings (index < argc) are NUL-terminated.
    let arg = |i: usize| unsafe { cstr(*argv.add(i)) };
    let first = if argc > 1 && arg(1) == b"--" { 2 } else { 1 };
    // Without "--", a leading '-' is an option, and there are none.
    if first >= argc || (first == 1 && arg(1).starts_with(b"-")) {
        eprint(b"usage: docker-init [--] COMMAND [ARG...]\n");
        exit(2);
    }
    // SAFETY: first < argc; argv[first..] is NULL-terminated.
    let cmd = unsafe { argv.add(first) };

    // Orphans below init are reparented to it even when it is not PID 1.
    // SAFETY: prctl with integer arguments.
    unsafe { sys::call(sys::PRCTL, PR_SET_CHILD_SUBREAPER, 1, 0, 0) };
    // An inherited SIG_IGN for SIGCHLD would have the kernel reap the child
    // itself, and its status would be lost: make it SIG_DFL.
    // struct sigaction: SIG_DFL, no flags, no restorer, an empty mask.
    let dfl = [0usize; 4];
    // SAFETY: a valid struct sigaction of the kernel's size; no old one asked.
    unsafe {
        sys::call(
            sys::RT_SIGACTION,
            SIGCHLD,
            dfl.as_ptr() as usize,
            0,
            SIGSET_SIZE,
        )
    };
    // Block all signals (the kernel leaves out SIGKILL and SIGSTOP) before
    // forking, so that none is lost: they wait for rt_sigtimedwait.
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: valid sigsets of SIGSET_SIZE bytes.
    unsafe {
        sys::call(
            sys::RT_SIGPROCMASK,
            SIG_SETMASK,
            &all as *const u64 as usize,
            &mut old as *mut u64 as usize,
            SIGSET_SIZE,
        )
    };
    // SAFETY: clone with only an exit signal is fork: the child gets a copy of
    // this address space and returns from the same call with 0.
    let pid = unsafe { sys::call(sys::CLONE, SIGCHLD, 0, 0, 0) };
    if pid < 0 {
        Msg::new()
            .push(b"docker-init: fork failed: ")
            .push_errno(-pid)
            .print();
        exit(1);
    }
    if pid == 0 {
        // SAFETY: cmd and envp are the NULL-terminated arrays from the stack.
        unsafe { child(cmd, envp, &old) }
    }
    parent(pid, &all)
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

/// Slice copies compile to memcpy calls, and there is no libc to supply it.
///
/// # Safety
/// `src` must be valid for `n` bytes of reads, `dst` for `n` bytes of writes,
/// and they must not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller guarantees both ranges; a volatile write keeps
        // the compiler from turning this loop into memcpy again.
        unsafe { core::ptr::write_volatile(dst.add(i), *src.add(i)) };
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
