//! Process creation and replacement: clone3 into new namespaces, execveat,
//! pidfds.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Which side of a fork the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Parent(libc::pid_t),
    Child,
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Fork the calling process, placing the child into the new namespaces named
/// by `ns_flags` (CLONE_NEW*) and, when given, straight into a cgroup v2
/// directory. The child runs on a copy of the caller's stack, as with fork.
///
/// The caller must be single-threaded: only the calling thread exists in
/// the child, so a lock held by another thread would never be released.
pub fn fork_into(ns_flags: libc::c_int, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Fork> {
    // With CLONE_PARENT the child takes the caller's own exit signal; the
    // kernel refuses an explicit one.
    let exit_signal = if ns_flags & libc::CLONE_PARENT != 0 {
        0
    } else {
        libc::SIGCHLD as u64
    };
    let mut args = CloneArgs {
        flags: ns_flags as u32 as u64,
        exit_signal,
        ..Default::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without a stack behaves like fork: the child resumes
    // here on a copy-on-write copy of our memory. The caller guarantees that
    // the process is single-threaded (documented above), so no lock can be
    // held by a thread that does not exist in the child.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOSYS) && cgroup.is_none() {
            // SAFETY: the legacy clone with a NULL stack is fork-like, with
            // the same single-thread requirement as above.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (ns_flags as libc::c_ulong) | exit_signal as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
            return match rc {
                r if r < 0 => Err(io::Error::last_os_error()),
                0 => Ok(Fork::Child),
                pid => Ok(Fork::Parent(pid as libc::pid_t)),
            };
        }
        return Err(err);
    }
    Ok(match rc {
        0 => Fork::Child,
        pid => Fork::Parent(pid as libc::pid_t),
    })
}

/// Replace the process image with the program `fd` refers to.
/// Returns only on failure.
pub fn execveat_fd(fd: BorrowedFd<'_>, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: argv/envp are NULL-terminated arrays of pointers into CStrings
    // that outlive the call; on success the call does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            a.as_ptr(),
            e.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// A pidfd for `pid`: signals sent through it cannot hit a recycled pid.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// Send `sig` to the process behind a pidfd.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: a null siginfo asks the kernel to fill in the defaults.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The leading `<major>.<minor>` of a kernel release (`6.1.0-13-amd64`);
/// `None` when it does not start with two numbers.
pub fn release_version(release: &str) -> Option<(u64, u64)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let mut number = || -> Option<u64> {
        let digits = parts.next().filter(|d| !d.is_empty())?;
        Some(digits.parse::<u64>().unwrap_or(u64::MAX))
    };
    Some((number()?, number()?))
}

/// The running kernel's `<major>.<minor>`, read once (uname).
pub fn kernel_version() -> Option<(u64, u64)> {
    static VERSION: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let uts = nix::sys::utsname::uname().ok()?;
        release_version(&uts.release().to_string_lossy())
    })
}

/// Ask for `sig` when the parent dies.
pub fn set_parent_death_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make the caller a child subreaper, so that orphans below it are
/// re-parented to it (used by foreground `run`).
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The caller's CPUs but the one it runs on; `None` when that leaves
/// none. A new process or thread lands on its parent's CPU, where it waits
/// while the parent works: this is the mask to give a helper meant to run
/// beside it.
pub fn cpus_elsewhere() -> Option<nix::sched::CpuSet> {
    use nix::sched::{sched_getaffinity, sched_getcpu, CpuSet};
    let mut cpus = sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    cpus.unset(sched_getcpu().ok()?).ok()?;
    (0..CpuSet::count())
        .any(|c| cpus.is_set(c).unwrap_or(false))
        .then_some(cpus)
}

/// Keep the just-started process `pid` off the caller's CPU
/// ([`cpus_elsewhere`]) until it takes every CPU back ([`all_cpus`]):
/// without it the scheduler leaves a new process on its parent's CPU,
/// where it waits while the parent works, even with the other CPU idle.
/// Nothing is done with one CPU.
pub fn keep_elsewhere(pid: libc::pid_t) {
    if let Some(elsewhere) = cpus_elsewhere() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &elsewhere);
    }
}

/// Ask for every CPU there is (after [`keep_elsewhere`]). Since Linux 6.2
/// the kernel keeps a task's requested mask and applies each later cpuset
/// as the cpuset's CPUs within it, so anything narrower would cap the
/// process and its children for good; with every CPU asked for, its CPUs
/// are its cpuset's, as when nothing was asked.
pub fn all_cpus() {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut all = CpuSet::new();
    for c in 0..CpuSet::count() {
        let _ = all.set(c);
    }
    let _ = sched_setaffinity(nix::unistd::Pid::from_raw(0), &all);
}

/// Spawn a thread that runs `f` off the caller's CPU ([`cpus_elsewhere`]),
/// beside its spawner. The thread moves itself first thing: the mask is
/// the spawner's, worked out before the spawn, and a new thread often runs
/// before its spawner gets on. (Moved from outside instead, a thread that
/// had already finished could not be: glibc's `pthread_setaffinity_np`
/// then names the caller, and pinned it.) Nothing is done with one CPU.
/// The thread keeps that mask: for short-lived helpers only.
pub fn spawn_elsewhere<T, F>(f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let elsewhere = cpus_elsewhere();
    std::thread::spawn(move || {
        if let Some(cpus) = elsewhere {
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus);
        }
        f()
    })
}

/// Exit at once, without running destructors or atexit handlers (for a
/// forked child whose parent's state must not be flushed twice).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Restore the default disposition of a signal.
pub fn default_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: installing SIG_DFL runs no code of ours in signal context.
    let prev = unsafe { libc::signal(sig, libc::SIG_DFL) };
    if prev == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Join a new anonymous session keyring called `name`, so that the
/// container does not share the caller's keys (KEYCTL_JOIN_SESSION_KEYRING).
/// Returns Ok(false) when the kernel has no key support.
pub fn join_session_keyring(name: &str) -> io::Result<bool> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: keyctl reads the NUL-terminated name, alive for the call.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, c.as_ptr()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(true)
}

/// Set the execution domain (personality(2)), e.g. PER_LINUX32.
pub fn set_personality(persona: libc::c_ulong) -> io::Result<()> {
    // SAFETY: personality takes an integer and touches no memory of ours.
    let rc = unsafe { libc::personality(persona) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set the calling process's I/O scheduling class and priority.
pub fn set_io_priority(class: u32, level: u32) -> io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    let prio = ((class & 0x7) << 13) | (level & 0x1fff);
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            prio as libc::c_int,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's `struct sched_attr` (first version fields and clamps).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SchedAttr {
    pub size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
    pub util_min: u32,
    pub util_max: u32,
}

/// Set the calling process's scheduling policy and attributes
/// (sched_setattr(2)).
pub fn set_scheduler(attr: &SchedAttr) -> io::Result<()> {
    let mut a = *attr;
    a.size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: `a` is a properly sized sched_attr that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &a as *const SchedAttr, 0u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Give the heap's free memory back to the kernel (`malloc_trim(0)`), for
/// long-lived processes after a burst of work.
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own allocator state.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drop page-table entries this process needed only to start, for a
/// long-lived process after its start-up work (what it touches later
/// faults back in):
///
/// - file mappings that are private, not writable and hold no copied
///   (anonymous) page — code, read-only data, relocation tables — whose
///   pages always equal the file's, so MADV_DONTNEED loses nothing;
/// - the main thread's stack below the caller's frame less a margin:
///   nothing lives there, and it comes back as zero pages if used.
///
/// Returns the bytes of address space dropped.
pub fn drop_startup_pages() -> io::Result<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut dropped = 0usize;
    // The stack: everything more than 16 KiB below this frame (room for
    // the calls made from here).
    let here = &dropped as *const usize as usize;
    let page = 4096usize;
    let limit = (here.saturating_sub(16 << 10)) & !(page - 1);
    for vma in parse_smaps(&smaps) {
        let (start, end) = if vma.name == "[stack]" {
            (vma.start, limit)
        } else if vma.file_backed
            && vma.perms.starts_with('r')
            && !vma.perms.contains('w')
            && vma.perms.ends_with('p')
            && vma.anonymous_kb == 0
        {
            (vma.start, vma.end)
        } else {
            continue;
        };
        if start < end && end <= vma.end && advise_dontneed(start, end) {
            dropped += end - start;
        }
    }
    Ok(dropped)
}

fn advise_dontneed(start: usize, end: usize) -> bool {
    // SAFETY: [start, end) is a whole mapping of this process taken from
    // /proc/self/smaps (or its stack below the live frames). For a private
    // file mapping without anonymous pages MADV_DONTNEED only drops
    // page-table entries and the next access reads the same bytes from the
    // file; for the dead part of the stack the next access gets zero pages,
    // and nothing there is live.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) == 0 }
}

/// One mapping of /proc/self/smaps.
#[derive(Debug, PartialEq, Eq)]
struct Vma<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    name: &'a str,
    file_backed: bool,
    anonymous_kb: u64,
}

fn parse_smaps(text: &str) -> impl Iterator<Item = Vma<'_>> {
    let mut lines = text.lines().peekable();
    std::iter::from_fn(move || loop {
        let header = lines.next()?;
        let mut f = header.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        else {
            continue;
        };
        let inode = f.nth(2).unwrap_or("0");
        let name = f.next().unwrap_or("");
        let mut anonymous_kb = 0;
        // The mapping's fields run up to the next header (a line whose
        // first word is an address range).
        while let Some(l) = lines.peek() {
            let first = l.split_whitespace().next().unwrap_or("");
            if first.contains('-') && !first.ends_with(':') {
                break;
            }
            if let Some(v) = l.strip_prefix("Anonymous:") {
                anonymous_kb = v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .unwrap_or(u64::MAX);
            }
            lines.next();
        }
        return Some(Vma {
            start,
            end,
            perms,
            name,
            file_backed: inode != "0",
            anonymous_kb,
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0010000 r--p 00000000 fe:00 1234 /usr/bin/x
Size:                 64 kB
Anonymous:             0 kB
AnonHugePages:         0 kB
VmFlags: rd mr mw me
55d0c0010000-55d0c0020000 r--p 00010000 fe:00 1234 /usr/bin/x
Size:                 64 kB
Anonymous:             8 kB
VmFlags: rd mr mw me ac
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Size:                132 kB
Anonymous:            24 kB
VmFlags: rd wr mr mw me gd ac
7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
";

    fn cpus_of(mask: &nix::sched::CpuSet) -> usize {
        (0..nix::sched::CpuSet::count())
            .filter(|&c| mask.is_set(c).unwrap_or(false))
            .count()
    }

    /// The helper runs with every CPU of its spawner but one, and the
    /// spawner's own mask is left alone however soon the helper ends.
    #[test]
    fn spawned_elsewhere_leaves_the_spawner_alone() {
        use nix::sched::sched_getaffinity;
        let me = || sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
        let before = me();
        for _ in 0..20 {
            let helper = spawn_elsewhere(me).join().unwrap();
            let want = match cpus_of(&before) {
                1 => 1,
                n => n - 1,
            };
            assert_eq!(cpus_of(&helper), want);
            assert_eq!(cpus_of(&me()), cpus_of(&before));
        }
    }

    #[test]
    fn smaps_mappings() {
        let v: Vec<Vma> = parse_smaps(SMAPS).collect();
        assert_eq!(v.len(), 4);
        assert_eq!(
            v[0],
            Vma {
                start: 0x55d0c0000000,
                end: 0x55d0c0010000,
                perms: "r--p",
                name: "/usr/bin/x",
                file_backed: true,
                anonymous_kb: 0,
            }
        );
        assert_eq!(v[1].anonymous_kb, 8, "copied pages keep a mapping");
        assert_eq!((v[2].name, v[2].file_backed), ("[stack]", false));
        assert_eq!((v[3].name, v[3].file_backed), ("[vdso]", false));
    }

    #[test]
    fn dropping_startup_pages_keeps_the_process_working() {
        let table: Vec<String> = (0..1000).map(|i| format!("{i:04}")).collect();
        let dropped = drop_startup_pages().unwrap();
        assert!(dropped > 0);
        // Code, read-only data and the heap still work afterwards.
        assert_eq!(table[999], "0999");
        assert_eq!(format!("{:?}", Some(1)), "Some(1)");
        let deep = fn_recursion(200);
        assert_eq!(deep, 200);
    }

    fn fn_recursion(n: u32) -> u32 {
        let pad = [n as u8; 256];
        if n == 0 {
            return u32::from(pad[0]);
        }
        1 + fn_recursion(n - 1) + u32::from(pad[255]) - u32::from(pad[0])
    }
}
