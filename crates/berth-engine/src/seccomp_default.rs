//! Docker's default seccomp profile, carried inside berth, and the
//! conversion of any profile written in Docker's format into the OCI
//! `linux.seccomp` object that berth's runtime loads.
//!
//! Docker's format is the OCI object plus conditions: a rule may apply only
//! when the container holds (`includes.caps`) or lacks (`excludes.caps`)
//! some capabilities, only on some architectures (`arches`, in Docker's
//! names: `amd64`, `arm64`, …), or only from some kernel version on
//! (`minKernel`, compared with the running kernel). `archMap` lists, per
//! native architecture, the architectures the filter must also cover. The
//! conversion keeps the rules whose conditions hold for the container's
//! bounding set and this host, and drops the conditions.
//!
//! [`profile`] states Docker's default profile as Rust data (the syscall
//! lists and the conditional rules below) and converts it with the same
//! code as [`from_docker_profile`], so both give the same object for the
//! same profile. Nothing is read from disk at run time except the kernel
//! release (uname) for `minKernel` rules.

use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------
// Docker's default profile, as data.
// ---------------------------------------------------------------------------

const ALLOW: &str = "SCMP_ACT_ALLOW";
const ERRNO: &str = "SCMP_ACT_ERRNO";

/// `ENOSYS`: what `clone3` returns without CAP_SYS_ADMIN, so that C
/// libraries fall back to `clone`, whose flags the filter can inspect.
const ENOSYS: u32 = 38;

/// `EPERM`: what every syscall the profile does not list returns.
const EPERM: u32 = 1;

/// Every `CLONE_NEW*` flag (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET): `clone` without CAP_SYS_ADMIN may not create
/// namespaces.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `personality(2)` domains a container may switch to: Linux, UNAME26,
/// ADDR_NO_RANDOMIZE, both, and the 0xffffffff query.
const PER_LINUX: u64 = 0x0000;
const PER_UNAME26: u64 = 0x0008;
const PER_ADDR_NO_RANDOMIZE: u64 = 0x0002_0000;
const PER_QUERY: u64 = 0xFFFF_FFFF;

/// Socket families around the two that are refused to everyone, AF_ALG
/// (38) and AF_VSOCK (40).
const AF_ALG: u64 = 38;
const AF_NFC: u64 = 39;
const AF_VSOCK: u64 = 40;

/// Syscalls every container may make, whatever its capabilities and
/// architecture (names that this architecture lacks are skipped when the
/// filter is compiled).
#[rustfmt::skip]
const ALWAYS_ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
    "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect",
    "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old",
    "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat",
    "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod",
    "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync",
    "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64",
    "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex",
    "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat",
    "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32", "geteuid",
    "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername",
    "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
    "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage",
    "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday",
    "getuid", "getuid32", "getxattr", "getxattrat", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup",
    "io_submit", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listmount", "listxattr", "listxattrat", "llistxattr", "_llseek", "lremovexattr", "lseek",
    "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
    "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect",
    "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
    "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
    "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
    "remap_file_pages", "removexattr", "removexattrat", "rename", "renameat", "renameat2",
    "restart_syscall", "riscv_hwprobe", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile",
    "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr",
    "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
    "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat",
    "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",

];

/// What CAP_SYS_ADMIN unlocks: mounting, namespaces, BPF, quotas, the
/// host name, and `clone`/`clone3` with any flags.
const SYS_ADMIN_SYSCALLS: &[&str] = &[
    "bpf",
    "clone",
    "clone3",
    "fanotify_init",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "lookup_dcookie",
    "lsm_get_self_attr",
    "lsm_list_modules",
    "lsm_set_self_attr",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "perf_event_open",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
    "syslog",
    "umount",
    "umount2",
    "unshare",
];

const CMP_EQ: &str = "SCMP_CMP_EQ";
const CMP_LT: &str = "SCMP_CMP_LT";
const CMP_GT: &str = "SCMP_CMP_GT";
const CMP_MASKED_EQ: &str = "SCMP_CMP_MASKED_EQ";

/// One comparison of a syscall argument.
#[derive(Debug, Clone, Copy)]
struct ArgCheck {
    index: u32,
    op: &'static str,
    value: u64,
}

const fn arg(index: u32, op: &'static str, value: u64) -> ArgCheck {
    ArgCheck { index, op, value }
}

/// When a rule applies. An empty list or `None` sets no condition.
#[derive(Debug, Clone, Copy)]
struct When {
    /// Capabilities the container must all hold.
    caps: &'static [&'static str],
    /// Capabilities the container must not hold (any one excludes the rule).
    lacks: &'static [&'static str],
    /// Architectures (Docker's names) the host must be one of.
    arches: &'static [&'static str],
    /// Architectures the host must not be.
    not_arches: &'static [&'static str],
    /// The oldest kernel (major, minor) the rule is for.
    min_kernel: Option<(u8, u8)>,
}

/// One rule of the built-in profile.
#[derive(Debug, Clone, Copy)]
struct Rule {
    names: &'static [&'static str],
    /// `None` allows the calls; `Some(errno)` fails them with `errno`.
    errno: Option<u32>,
    args: &'static [ArgCheck],
    when: When,
}

/// A rule allowing `names` unconditionally (narrowed by the methods below).
const fn allow(names: &'static [&'static str]) -> Rule {
    Rule {
        names,
        errno: None,
        args: &[],
        when: When {
            caps: &[],
            lacks: &[],
            arches: &[],
            not_arches: &[],
            min_kernel: None,
        },
    }
}

impl Rule {
    const fn fail_with(self, errno: u32) -> Rule {
        Rule {
            errno: Some(errno),
            ..self
        }
    }
    const fn if_arg(self, args: &'static [ArgCheck]) -> Rule {
        Rule { args, ..self }
    }
    const fn with_caps(self, caps: &'static [&'static str]) -> Rule {
        Rule {
            when: When { caps, ..self.when },
            ..self
        }
    }
    const fn without_caps(self, lacks: &'static [&'static str]) -> Rule {
        Rule {
            when: When { lacks, ..self.when },
            ..self
        }
    }
    const fn on(self, arches: &'static [&'static str]) -> Rule {
        Rule {
            when: When {
                arches,
                ..self.when
            },
            ..self
        }
    }
    const fn not_on(self, not_arches: &'static [&'static str]) -> Rule {
        Rule {
            when: When {
                not_arches,
                ..self.when
            },
            ..self
        }
    }
    const fn since(self, major: u8, minor: u8) -> Rule {
        Rule {
            when: When {
                min_kernel: Some((major, minor)),
                ..self.when
            },
            ..self
        }
    }
}

const S390: &[&str] = &["s390", "s390x"];
const SYS_ADMIN: &[&str] = &["CAP_SYS_ADMIN"];

/// The rules of Docker's default profile, in Docker's order.
const RULES: &[Rule] = &[
    allow(ALWAYS_ALLOWED),
    // Reading another process's memory needed CAP_SYS_PTRACE before 4.8,
    // when seccomp could still be bypassed through ptrace.
    allow(&["process_vm_readv", "process_vm_writev", "ptrace"]).since(4, 8),
    allow(&["socket"]).if_arg(&[arg(0, CMP_LT, AF_ALG)]),
    allow(&["socket"]).if_arg(&[arg(0, CMP_EQ, AF_NFC)]),
    allow(&["socket"]).if_arg(&[arg(0, CMP_GT, AF_VSOCK)]),
    allow(&["personality"]).if_arg(&[arg(0, CMP_EQ, PER_LINUX)]),
    allow(&["personality"]).if_arg(&[arg(0, CMP_EQ, PER_UNAME26)]),
    allow(&["personality"]).if_arg(&[arg(0, CMP_EQ, PER_ADDR_NO_RANDOMIZE)]),
    allow(&["personality"]).if_arg(&[arg(0, CMP_EQ, PER_UNAME26 | PER_ADDR_NO_RANDOMIZE)]),
    allow(&["personality"]).if_arg(&[arg(0, CMP_EQ, PER_QUERY)]),
    allow(&["sync_file_range2", "swapcontext"]).on(&["ppc64le"]),
    allow(&[
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "sync_file_range2",
        "breakpoint",
        "cacheflush",
        "set_tls",
    ])
    .on(&["arm", "arm64"]),
    allow(&["arch_prctl"]).on(&["amd64", "x32"]),
    allow(&["modify_ldt"]).on(&["amd64", "x32", "x86"]),
    allow(&[
        "s390_pci_mmio_read",
        "s390_pci_mmio_write",
        "s390_runtime_instr",
    ])
    .on(S390),
    allow(&["riscv_flush_icache"]).on(&["riscv64"]),
    allow(&["open_by_handle_at"]).with_caps(&["CAP_DAC_READ_SEARCH"]),
    allow(SYS_ADMIN_SYSCALLS).with_caps(SYS_ADMIN),
    // Without CAP_SYS_ADMIN, clone may not create namespaces ...
    allow(&["clone"])
        .if_arg(&[arg(0, CMP_MASKED_EQ, CLONE_NAMESPACE_FLAGS)])
        .without_caps(SYS_ADMIN)
        .not_on(S390),
    // ... (s390 passes the flags second) ...
    allow(&["clone"])
        .if_arg(&[arg(1, CMP_MASKED_EQ, CLONE_NAMESPACE_FLAGS)])
        .on(S390)
        .without_caps(SYS_ADMIN),
    // ... and clone3, whose flags sit behind a pointer, looks absent.
    allow(&["clone3"]).fail_with(ENOSYS).without_caps(SYS_ADMIN),
    allow(&["reboot"]).with_caps(&["CAP_SYS_BOOT"]),
    allow(&["chroot"]).with_caps(&["CAP_SYS_CHROOT"]),
    allow(&["delete_module", "init_module", "finit_module"]).with_caps(&["CAP_SYS_MODULE"]),
    allow(&["acct"]).with_caps(&["CAP_SYS_PACCT"]),
    allow(&[
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ])
    .with_caps(&["CAP_SYS_PTRACE"]),
    allow(&["iopl", "ioperm"]).with_caps(&["CAP_SYS_RAWIO"]),
    allow(&["settimeofday", "stime", "clock_settime", "clock_settime64"])
        .with_caps(&["CAP_SYS_TIME"]),
    allow(&["vhangup"]).with_caps(&["CAP_SYS_TTY_CONFIG"]),
    allow(&[
        "get_mempolicy",
        "mbind",
        "set_mempolicy",
        "set_mempolicy_home_node",
    ])
    .with_caps(&["CAP_SYS_NICE"]),
    allow(&["syslog"]).with_caps(&["CAP_SYSLOG"]),
    allow(&["bpf"]).with_caps(&["CAP_BPF"]),
    allow(&["perf_event_open"]).with_caps(&["CAP_PERFMON"]),
];

/// Per native architecture, the other architectures a filter covers
/// (32-bit and ABI variants the same kernel runs).
const ARCH_MAP: &[(&str, &[&str])] = &[
    ("SCMP_ARCH_X86_64", &["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
    ("SCMP_ARCH_AARCH64", &["SCMP_ARCH_ARM"]),
    (
        "SCMP_ARCH_MIPS64",
        &["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"],
    ),
    (
        "SCMP_ARCH_MIPS64N32",
        &["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"],
    ),
    (
        "SCMP_ARCH_MIPSEL64",
        &["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"],
    ),
    (
        "SCMP_ARCH_MIPSEL64N32",
        &["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"],
    ),
    ("SCMP_ARCH_S390X", &["SCMP_ARCH_S390"]),
    ("SCMP_ARCH_RISCV64", &[]),
    ("SCMP_ARCH_LOONGARCH64", &[]),
];

/// Docker's default profile in the shape of a parsed Docker profile.
fn builtin() -> &'static Profile {
    static BUILTIN: OnceLock<Profile> = OnceLock::new();
    BUILTIN.get_or_init(|| Profile {
        default_action: ERRNO.to_string(),
        default_errno_ret: Some(EPERM),
        arch_map: ARCH_MAP
            .iter()
            .map(|(arch, subs)| ArchMap {
                architecture: (*arch).to_string(),
                sub_architectures: strings(subs),
            })
            .collect(),
        syscalls: RULES.iter().map(|r| r.to_syscall()).collect(),
        ..Profile::default()
    })
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

impl Rule {
    fn to_syscall(self) -> Syscall {
        let w = &self.when;
        Syscall {
            names: strings(self.names),
            action: if self.errno.is_some() { ERRNO } else { ALLOW }.to_string(),
            errno_ret: self.errno,
            args: self
                .args
                .iter()
                .map(|a| Arg {
                    index: a.index,
                    value: a.value,
                    value_two: 0,
                    op: a.op.to_string(),
                })
                .collect(),
            includes: Filter::new(w.caps, w.arches, w.min_kernel),
            excludes: Filter::new(w.lacks, w.not_arches, None),
            ..Syscall::default()
        }
    }
}

// ---------------------------------------------------------------------------
// Docker's profile format.
// ---------------------------------------------------------------------------

/// A seccomp profile in Docker's format (`--security-opt seccomp=FILE`).
/// Unknown fields are ignored and `null` reads as empty, as Docker's
/// decoder does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(default, deserialize_with = "nullable")]
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    architectures: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    arch_map: Vec<ArchMap>,
    #[serde(default, deserialize_with = "nullable")]
    flags: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    listener_path: String,
    #[serde(default, deserialize_with = "nullable")]
    listener_metadata: String,
    #[serde(default, deserialize_with = "nullable")]
    syscalls: Vec<Syscall>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    #[serde(default, deserialize_with = "nullable")]
    architecture: String,
    #[serde(default, deserialize_with = "nullable")]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    /// The old single-name form; exclusive with `names`.
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    names: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    args: Vec<Arg>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    value: u64,
    #[serde(default)]
    value_two: u64,
    #[serde(default, deserialize_with = "nullable")]
    op: String,
}

/// The conditions of a rule (`includes` or `excludes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default, deserialize_with = "nullable")]
    caps: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    arches: Vec<String>,
    #[serde(default, deserialize_with = "min_kernel")]
    min_kernel: Option<KernelVersion>,
}

impl Filter {
    /// The filter of a built-in rule; `None` when it sets no condition.
    fn new(caps: &[&str], arches: &[&str], min_kernel: Option<(u8, u8)>) -> Option<Filter> {
        if caps.is_empty() && arches.is_empty() && min_kernel.is_none() {
            return None;
        }
        Some(Filter {
            caps: strings(caps),
            arches: strings(arches),
            min_kernel: min_kernel.map(|(major, minor)| KernelVersion { major, minor }),
        })
    }
}

/// A kernel version as `minKernel` gives it: `<major>.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct KernelVersion {
    major: u8,
    minor: u8,
}

impl KernelVersion {
    /// Stands in for a running kernel whose release cannot be read: every
    /// `minKernel` condition holds.
    const NEWEST: KernelVersion = KernelVersion {
        major: u8::MAX,
        minor: u8::MAX,
    };

    /// Docker's rule: exactly two dot-separated numbers, each at most 255,
    /// not both zero.
    fn parse(s: &str) -> Result<KernelVersion, String> {
        let bad = |why: &str| {
            format!("invalid kernel version: {s:?}, expected \"<kernel>.<major>\"{why}")
        };
        let mut parts = s.splitn(3, '.');
        let (Some(major), Some(minor), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(""));
        };
        let major = major.parse::<u8>().map_err(|e| bad(&format!(": {e}")))?;
        let minor = minor.parse::<u8>().map_err(|e| bad(&format!(": {e}")))?;
        if major == 0 && minor == 0 {
            return Err(bad(": version cannot be 0.0"));
        }
        Ok(KernelVersion { major, minor })
    }

    /// A kernel's `<major>.<minor>`; numbers past 255 count as 255.
    fn from_version((major, minor): (u64, u64)) -> KernelVersion {
        KernelVersion {
            major: major.min(255) as u8,
            minor: minor.min(255) as u8,
        }
    }
}

/// `null` reads as the type's empty value, as in Go.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn min_kernel<'de, D>(d: D) -> Result<Option<KernelVersion>, D::Error>
where
    D: Deserializer<'de>,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => KernelVersion::parse(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

// ---------------------------------------------------------------------------
// The conversion.
// ---------------------------------------------------------------------------

/// The host a profile is converted for.
#[derive(Debug, Clone, Copy)]
struct Host {
    /// Docker's name of the architecture berth was built for (`amd64`).
    arch: &'static str,
    kernel: KernelVersion,
}

/// Docker's name (Go's `GOARCH`, libseccomp's spelling) of the
/// architecture berth was built for; rules' `arches` use these names.
const HOST_ARCH: &str = if cfg!(target_arch = "x86_64") {
    "amd64"
} else if cfg!(target_arch = "x86") {
    "x86"
} else if cfg!(target_arch = "aarch64") {
    "arm64"
} else if cfg!(target_arch = "arm") {
    "arm"
} else if cfg!(all(target_arch = "powerpc64", target_endian = "little")) {
    "ppc64le"
} else if cfg!(target_arch = "powerpc64") {
    "ppc64"
} else if cfg!(target_arch = "powerpc") {
    "ppc"
} else if cfg!(target_arch = "s390x") {
    "s390x"
} else if cfg!(target_arch = "riscv64") {
    "riscv64"
} else if cfg!(target_arch = "loongarch64") {
    "loongarch64"
} else if cfg!(all(target_arch = "mips64", target_endian = "little")) {
    "mipsel64"
} else if cfg!(target_arch = "mips64") {
    "mips64"
} else if cfg!(all(target_arch = "mips", target_endian = "little")) {
    "mipsel"
} else if cfg!(target_arch = "mips") {
    "mips"
} else {
    ""
};

/// libseccomp's name of a Docker architecture name.
fn scmp_arch(docker: &str) -> Option<&'static str> {
    Some(match docker {
        "x86" => "SCMP_ARCH_X86",
        "amd64" => "SCMP_ARCH_X86_64",
        "arm" => "SCMP_ARCH_ARM",
        "arm64" => "SCMP_ARCH_AARCH64",
        "loongarch64" => "SCMP_ARCH_LOONGARCH64",
        "mips" => "SCMP_ARCH_MIPS",
        "mipsel" => "SCMP_ARCH_MIPSEL",
        "mips64" => "SCMP_ARCH_MIPS64",
        "mips64n32" => "SCMP_ARCH_MIPS64N32",
        "mipsel64" => "SCMP_ARCH_MIPSEL64",
        "mipsel64n32" => "SCMP_ARCH_MIPSEL64N32",
        "ppc" => "SCMP_ARCH_PPC",
        "ppc64" => "SCMP_ARCH_PPC64",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "s390" => "SCMP_ARCH_S390",
        "s390x" => "SCMP_ARCH_S390X",
        _ => return None,
    })
}

/// The running kernel's `<major>.<minor>`.
fn running_kernel() -> Result<KernelVersion, String> {
    berth_sys::process::kernel_version()
        .map(KernelVersion::from_version)
        .ok_or_else(|| "failed to read the kernel version".to_string())
}

/// Docker's default seccomp profile as the OCI `linux.seccomp` object for
/// a container whose bounding set is `caps` (names like `CAP_SYS_ADMIN`),
/// on this host's architecture and kernel.
pub fn profile(caps: &[String]) -> Value {
    // The built-in profile is valid (see the tests); only the kernel
    // release can be unknown, and then every minKernel rule applies.
    let host = Host {
        arch: HOST_ARCH,
        kernel: running_kernel().unwrap_or(KernelVersion::NEWEST),
    };
    convert(builtin(), caps, &host)
}

/// Convert a profile in Docker's format (the text of
/// `--security-opt seccomp=FILE`) into the OCI `linux.seccomp` object for
/// a container whose bounding set is `caps`, as [`profile`] does for the
/// default profile.
///
/// A profile without `defaultAction` and without syscalls means "no
/// filter", as in Docker: the result is then `Value::Null`. The error
/// names the field at fault.
pub fn from_docker_profile(json: &str, caps: &[String]) -> Result<Value, String> {
    let profile: Profile =
        serde_json::from_str(json).map_err(|e| format!("decoding seccomp profile failed: {e}"))?;
    if profile.default_action.is_empty() && profile.syscalls.is_empty() {
        return Ok(Value::Null);
    }
    validate(&profile)?;
    let kernel = match running_kernel() {
        Ok(k) => k,
        Err(e) if needs_kernel(&profile) => return Err(e),
        Err(_) => KernelVersion::NEWEST,
    };
    Ok(convert(
        &profile,
        caps,
        &Host {
            arch: HOST_ARCH,
            kernel,
        },
    ))
}

fn needs_kernel(p: &Profile) -> bool {
    p.syscalls.iter().any(|s| {
        [&s.includes, &s.excludes]
            .into_iter()
            .flatten()
            .any(|f| f.min_kernel.is_some())
    })
}

const ACTIONS: &[&str] = &[
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
];

const OPERATORS: &[&str] = &[
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

const FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/// The architecture names the runtime accepts.
const ARCHES: &[&str] = &[
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

fn check(field: &str, value: &str, known: bool, what: &str) -> Result<(), String> {
    if known {
        Ok(())
    } else {
        Err(format!("{field}: unknown {what} {value:?}"))
    }
}

/// Docker's own checks, and names the runtime would refuse (reported now,
/// with the field, rather than when the container starts).
fn validate(p: &Profile) -> Result<(), String> {
    if !p.architectures.is_empty() && !p.arch_map.is_empty() {
        return Err(
            "both 'architectures' and 'archMap' are specified in the seccomp profile, \
                    use either 'architectures' or 'archMap'"
                .to_string(),
        );
    }
    check(
        "defaultAction",
        &p.default_action,
        ACTIONS.contains(&p.default_action.as_str()),
        "action",
    )?;
    for (i, a) in p.architectures.iter().enumerate() {
        check(
            &format!("architectures[{i}]"),
            a,
            ARCHES.contains(&a.as_str()),
            "architecture",
        )?;
    }
    for (i, m) in p.arch_map.iter().enumerate() {
        let field = format!("archMap[{i}]");
        check(
            &format!("{field}.architecture"),
            &m.architecture,
            ARCHES.contains(&m.architecture.as_str()),
            "architecture",
        )?;
        for (j, a) in m.sub_architectures.iter().enumerate() {
            check(
                &format!("{field}.subArchitectures[{j}]"),
                a,
                ARCHES.contains(&a.as_str()),
                "architecture",
            )?;
        }
    }
    for (i, f) in p.flags.iter().enumerate() {
        check(
            &format!("flags[{i}]"),
            f,
            FLAGS.contains(&f.as_str()),
            "flag",
        )?;
    }
    for (i, s) in p.syscalls.iter().enumerate() {
        validate_syscall(&format!("syscalls[{i}]"), s)?;
    }
    Ok(())
}

fn validate_syscall(field: &str, s: &Syscall) -> Result<(), String> {
    if !s.name.is_empty() && !s.names.is_empty() {
        return Err(format!(
            "{field}: both 'name' and 'names' are specified in the seccomp profile, \
             use either 'name' or 'names'"
        ));
    }
    check(
        &format!("{field}.action"),
        &s.action,
        ACTIONS.contains(&s.action.as_str()),
        "action",
    )?;
    for (j, a) in s.args.iter().enumerate() {
        let arg = format!("{field}.args[{j}]");
        check(
            &format!("{arg}.op"),
            &a.op,
            OPERATORS.contains(&a.op.as_str()),
            "operator",
        )?;
        if a.index > 5 {
            return Err(format!(
                "{arg}.index: {} is not an argument index (0 to 5)",
                a.index
            ));
        }
    }
    Ok(())
}

/// The OCI object for `p`, keeping the rules whose conditions hold for
/// `caps` on `host`.
fn convert(p: &Profile, caps: &[String], host: &Host) -> Value {
    let mut out = Map::new();
    out.insert("defaultAction".into(), json!(p.default_action));
    if let Some(errno) = p.default_errno_ret {
        out.insert("defaultErrnoRet".into(), json!(errno));
    }
    let arches = architectures(p, host.arch);
    if !arches.is_empty() {
        out.insert("architectures".into(), json!(arches));
    }
    if !p.flags.is_empty() {
        out.insert("flags".into(), json!(p.flags));
    }
    if !p.listener_path.is_empty() {
        out.insert("listenerPath".into(), json!(p.listener_path));
    }
    if !p.listener_metadata.is_empty() {
        out.insert("listenerMetadata".into(), json!(p.listener_metadata));
    }
    let syscalls: Vec<Value> = p
        .syscalls
        .iter()
        .filter(|s| applies(s, caps, host))
        .map(syscall_json)
        .collect();
    if !syscalls.is_empty() {
        out.insert("syscalls".into(), Value::Array(syscalls));
    }
    Value::Object(out)
}

/// The profile's `architectures`, then the `archMap` entry of the host's
/// architecture with its sub-architectures.
fn architectures(p: &Profile, arch: &str) -> Vec<String> {
    let mut out = p.architectures.clone();
    if let Some(native) = scmp_arch(arch) {
        if let Some(m) = p.arch_map.iter().find(|m| m.architecture == native) {
            out.push(m.architecture.clone());
            out.extend(m.sub_architectures.iter().cloned());
        }
    }
    out
}

fn holds(caps: &[String], cap: &str) -> bool {
    caps.iter().any(|c| c == cap)
}

/// Whether a rule's `excludes` and `includes` let it into the filter.
fn applies(s: &Syscall, caps: &[String], host: &Host) -> bool {
    if let Some(ex) = &s.excludes {
        if ex.arches.iter().any(|a| a == host.arch)
            || ex.caps.iter().any(|c| holds(caps, c))
            || ex.min_kernel.is_some_and(|k| host.kernel >= k)
        {
            return false;
        }
    }
    if let Some(inc) = &s.includes {
        if (!inc.arches.is_empty() && !inc.arches.iter().any(|a| a == host.arch))
            || !inc.caps.iter().all(|c| holds(caps, c))
            || inc.min_kernel.is_some_and(|k| host.kernel < k)
        {
            return false;
        }
    }
    true
}

fn syscall_json(s: &Syscall) -> Value {
    let names = if s.name.is_empty() {
        s.names.clone()
    } else {
        vec![s.name.clone()]
    };
    let mut rule = Map::new();
    rule.insert("names".into(), json!(names));
    rule.insert("action".into(), json!(s.action));
    if let Some(errno) = s.errno_ret {
        rule.insert("errnoRet".into(), json!(errno));
    }
    if !s.args.is_empty() {
        let args: Vec<Value> = s.args.iter().map(arg_json).collect();
        rule.insert("args".into(), Value::Array(args));
    }
    Value::Object(rule)
}

fn arg_json(a: &Arg) -> Value {
    let mut arg = json!({"index": a.index, "value": a.value, "op": a.op});
    if a.value_two != 0 {
        arg["valueTwo"] = json!(a.value_two);
    }
    arg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES};

    /// Docker's default profile, in Docker's format. The test fails when the
    /// file is missing: it is the reference the built-in profile must match.
    fn reference() -> String {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/reference/seccomp-default.json"
        );
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (Docker's default seccomp profile)"))
    }

    fn caps(extra: &[&str]) -> Vec<String> {
        let mut c = strings(DEFAULT_CAPABILITIES);
        c.extend(strings(extra));
        c
    }

    fn same_as_reference(caps: &[String]) {
        let converted = from_docker_profile(&reference(), caps).unwrap();
        let builtin = profile(caps);
        assert_eq!(converted, builtin);
        assert!(builtin["syscalls"].as_array().unwrap().len() > 10);
    }

    #[test]
    fn builtin_matches_the_reference_with_default_caps() {
        same_as_reference(&caps(&[]));
    }

    #[test]
    fn builtin_matches_the_reference_with_all_caps() {
        same_as_reference(&strings(ALL_CAPABILITIES));
    }

    #[test]
    fn builtin_matches_the_reference_with_sys_admin() {
        same_as_reference(&caps(&["CAP_SYS_ADMIN"]));
    }

    #[test]
    fn builtin_rules_equal_the_reference_rules_for_every_arch() {
        // Not only what this host keeps: every rule, condition and archMap
        // entry, for every architecture and kernel.
        let parsed: Profile = serde_json::from_str(&reference()).unwrap();
        assert_eq!(&parsed, builtin());
    }

    /// Names of the rules with `action` and no argument condition.
    fn plain_names(p: &Value, action: &str) -> Vec<String> {
        p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == action && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    fn has_arg_rule(p: &Value, name: &str, index: u64) -> bool {
        p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["names"] == json!([name]) && r["args"][0]["index"] == json!(index))
    }

    #[test]
    fn default_caps_keep_mount_and_namespaces_out() {
        let p = profile(&caps(&[]));
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        let allowed = plain_names(&p, "SCMP_ACT_ALLOW");
        for name in ["read", "write", "execve", "chroot", "ptrace"] {
            assert!(allowed.iter().any(|n| n == name), "{name} not allowed");
        }
        for name in [
            "mount",
            "unshare",
            "setns",
            "open_by_handle_at",
            "reboot",
            "bpf",
        ] {
            assert!(!allowed.iter().any(|n| n == name), "{name} allowed");
        }
        // clone only without namespace flags; clone3 says ENOSYS.
        assert!(!allowed.iter().any(|n| n == "clone" || n == "clone3"));
        assert!(p["syscalls"].as_array().unwrap().iter().any(|r| {
            r["names"] == json!(["clone3"])
                && r["action"] == "SCMP_ACT_ERRNO"
                && r["errnoRet"] == 38
        }));
        let masked = p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["names"] == json!(["clone"]))
            .unwrap();
        assert_eq!(
            masked["args"],
            json!([{"index": 0, "value": 0x7E02_0000_u64, "op": "SCMP_CMP_MASKED_EQ"}])
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_gets_its_arches_and_arch_rules() {
        let p = profile(&caps(&[]));
        assert_eq!(
            p["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let allowed = plain_names(&p, "SCMP_ACT_ALLOW");
        assert!(allowed.iter().any(|n| n == "arch_prctl"));
        assert!(allowed.iter().any(|n| n == "modify_ldt"));
        assert!(!allowed.iter().any(|n| n == "riscv_flush_icache"));
        assert!(!allowed.iter().any(|n| n == "s390_runtime_instr"));
    }

    #[test]
    fn sys_admin_allows_mount_and_any_clone() {
        let p = profile(&caps(&["CAP_SYS_ADMIN"]));
        let allowed = plain_names(&p, "SCMP_ACT_ALLOW");
        for name in ["mount", "unshare", "setns", "clone", "clone3", "bpf"] {
            assert!(allowed.iter().any(|n| n == name), "{name} not allowed");
        }
        assert!(!has_arg_rule(&p, "clone", 0));
        assert!(!p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "SCMP_ACT_ERRNO"));
    }

    #[test]
    fn each_cap_rule_needs_its_cap() {
        let without = plain_names(&profile(&caps(&[])), "SCMP_ACT_ALLOW");
        for (cap, name) in [
            ("CAP_SYS_BOOT", "reboot"),
            ("CAP_SYS_MODULE", "init_module"),
            ("CAP_SYS_PTRACE", "kcmp"),
            ("CAP_SYS_TIME", "settimeofday"),
            ("CAP_BPF", "bpf"),
            ("CAP_PERFMON", "perf_event_open"),
            ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
        ] {
            assert!(!without.iter().any(|n| n == name), "{name} without {cap}");
            let with = plain_names(&profile(&caps(&[cap])), "SCMP_ACT_ALLOW");
            assert!(with.iter().any(|n| n == name), "{name} with {cap}");
        }
    }

    fn convert_for(arch: &'static str, kernel: (u8, u8), caps: &[String]) -> Value {
        let host = Host {
            arch,
            kernel: KernelVersion {
                major: kernel.0,
                minor: kernel.1,
            },
        };
        convert(builtin(), caps, &host)
    }

    #[test]
    fn min_kernel_compares_with_the_running_kernel() {
        let c = caps(&[]);
        let ptrace = |p: &Value| {
            plain_names(p, "SCMP_ACT_ALLOW")
                .iter()
                .any(|n| n == "ptrace")
        };
        assert!(!ptrace(&convert_for("amd64", (4, 4), &c)));
        assert!(!ptrace(&convert_for("amd64", (3, 19), &c)));
        assert!(ptrace(&convert_for("amd64", (4, 8), &c)));
        assert!(ptrace(&convert_for("amd64", (5, 0), &c)));
        // Excludes: a rule dropped from a kernel on.
        let text = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","excludes":{"minKernel":"5.4"}}]}"#;
        let p: Profile = serde_json::from_str(text).unwrap();
        let old = Host {
            arch: "amd64",
            kernel: KernelVersion { major: 5, minor: 3 },
        };
        let new = Host {
            arch: "amd64",
            kernel: KernelVersion { major: 5, minor: 4 },
        };
        assert!(convert(&p, &[], &old).get("syscalls").is_some());
        assert!(convert(&p, &[], &new).get("syscalls").is_none());
    }

    #[test]
    fn arches_pick_rules_and_arch_map() {
        let c = caps(&[]);
        let s390 = convert_for("s390x", (6, 1), &c);
        assert!(has_arg_rule(&s390, "clone", 1));
        assert!(!has_arg_rule(&s390, "clone", 0));
        assert_eq!(
            s390["architectures"],
            json!(["SCMP_ARCH_S390X", "SCMP_ARCH_S390"])
        );
        let arm = convert_for("arm64", (6, 1), &c);
        assert!(plain_names(&arm, "SCMP_ACT_ALLOW")
            .iter()
            .any(|n| n == "set_tls"));
        assert!(!plain_names(&arm, "SCMP_ACT_ALLOW")
            .iter()
            .any(|n| n == "arch_prctl"));
        // ppc64le has no archMap entry: no architectures at all.
        assert!(convert_for("ppc64le", (6, 1), &c)
            .get("architectures")
            .is_none());
    }

    #[test]
    fn docker_format_details() {
        let text = r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"],
            "flags":["SECCOMP_FILTER_FLAG_LOG"],"unknownField":1,"syscalls":[
            {"name":"mkdir","action":"SCMP_ACT_ERRNO","errnoRet":13,"comment":"x",
             "args":[{"index":1,"value":7,"valueTwo":3,"op":"SCMP_CMP_MASKED_EQ"}]},
            {"names":["rmdir"],"action":"SCMP_ACT_LOG","args":null,"includes":{"caps":["CAP_X"]}}]}"#;
        let v = from_docker_profile(text, &[]).unwrap();
        assert_eq!(
            v,
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86"],
                "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls": [{
                    "names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                    "args": [{"index": 1, "value": 7, "valueTwo": 3, "op": "SCMP_CMP_MASKED_EQ"}]
                }]
            })
        );
        let with_cap = from_docker_profile(text, &["CAP_X".to_string()]).unwrap();
        assert_eq!(with_cap["syscalls"][1]["names"], json!(["rmdir"]));
    }

    #[test]
    fn empty_profile_means_no_filter() {
        assert_eq!(from_docker_profile("{}", &[]).unwrap(), Value::Null);
        assert_eq!(
            from_docker_profile(r#"{"syscalls":null}"#, &[]).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn docker_profile_errors_name_the_field() {
        let cases = [
            ("{not json", "decoding seccomp profile failed"),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"],
                   "archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#,
                "both 'architectures' and 'archMap'",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                   {"name":"a","names":["b"],"action":"SCMP_ACT_ALLOW"}]}"#,
                "syscalls[0]: both 'name' and 'names'",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_NOPE"}"#,
                "defaultAction: unknown action \"SCMP_ACT_NOPE\"",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],"action":"x"}]}"#,
                "syscalls[0].action: unknown action \"x\"",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],
                   "action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"LT"}]}]}"#,
                "syscalls[0].args[0].op: unknown operator \"LT\"",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],
                   "action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
                "syscalls[0].args[0].index: 6",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_Z80"]}"#,
                "architectures[0]: unknown architecture",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["FLAG"]}"#,
                "flags[0]: unknown flag",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],
                   "action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4"}}]}"#,
                "invalid kernel version",
            ),
        ];
        for (text, want) in cases {
            let e = from_docker_profile(text, &[]).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn kernel_versions() {
        let v = |major, minor| KernelVersion { major, minor };
        // The running kernel's release, read as berth reads it.
        let from_release =
            |r: &str| berth_sys::process::release_version(r).map(KernelVersion::from_version);
        assert_eq!(KernelVersion::parse("4.8"), Ok(v(4, 8)));
        assert_eq!(KernelVersion::parse("10.255"), Ok(v(10, 255)));
        for bad in ["4", "4.8.1", "0.0", "256.1", "a.b", "4.", ""] {
            assert!(KernelVersion::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(from_release("6.18.44-fc-v657\n"), Some(v(6, 18)));
        assert_eq!(from_release("5.10"), Some(v(5, 10)));
        assert_eq!(from_release("4.300.1"), Some(v(4, 255)));
        assert_eq!(from_release("linux"), None);
        assert!(v(4, 8) < v(4, 10) && v(4, 10) < v(5, 0));
        assert!(running_kernel().is_ok());
    }

    #[test]
    fn the_runtime_compiles_the_profile() {
        for c in [caps(&[]), strings(ALL_CAPABILITIES)] {
            let v = profile(&c);
            let spec: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(v).unwrap();
            berth_runtime::seccomp::compile(&spec).unwrap();
        }
    }
}
