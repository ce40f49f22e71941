//! seccomp: the OCI `linux.seccomp` section compiled into a libseccomp filter.
//!
//! Two steps, as the rest of the runtime works:
//!
//! - [`compile`] runs in the runtime process, before any container resource
//!   exists. It checks every field and turns the section into a [`Filter`]:
//!   plain data (default action, architectures, attributes, one rule per
//!   syscall and argument group) with syscall names already resolved. It also
//!   builds the libseccomp context once and throws it away, so that whatever
//!   libseccomp would refuse is reported here, with the field that caused it.
//! - [`Filter::load`] runs in the container's init, just before `execve`. It
//!   builds the libseccomp context again from the plan and installs it in the
//!   calling thread (all threads with `SECCOMP_FILTER_FLAG_TSYNC`).
//!
//! A [`Filter`] is plain data (`Send`, `Sync`, `Clone`), so it stays valid
//! across `fork`.
//!
//! Behaviour follows runc where the runtime-spec leaves room:
//!
//! - a syscall name that libseccomp does not know on this architecture is
//!   skipped (Docker's profile names syscalls that older kernels lack);
//! - a rule whose action equals the default action is skipped;
//! - `SCMP_ACT_KILL` is `SCMP_ACT_KILL_THREAD`; `SCMP_ACT_ERRNO` and
//!   `SCMP_ACT_TRACE` without `errnoRet` use `EPERM`;
//! - conditions of one rule are ANDed, except when two of them name the same
//!   argument: libseccomp cannot AND those, so each condition of that rule
//!   becomes a rule of its own (the conditions are ORed);
//! - libseccomp does not set `no_new_privs` (the runtime sets it when the
//!   config asks for it).
//!
//! Unknown action, operator, architecture or flag names never reach this
//! module: the `oci-spec` types are enums, so `config.json` fails to parse.

use libseccomp::error::SeccompError as LibseccompError;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// The field every error message starts from.
const FIELD: &str = "linux.seccomp";

/// A syscall has at most six arguments, numbered 0 to 5.
const MAX_ARGS: usize = 6;

/// Past this many rules, ask libseccomp for a binary tree instead of a linear
/// list of syscall checks. (libseccomp up to 2.5.4 misbehaves with the tree
/// and no rule at all, so small filters keep the default.)
const TREE_MIN_RULES: usize = 32;

/// Syscalls that [`Filter::load`] and the hand-over of the notification fd
/// make after the filter is installed and before anyone listens on that fd: a
/// `SCMP_ACT_NOTIFY` rule on one of them would block the container's init
/// forever.
const NOTIFY_FORBIDDEN: &[&str] = &["close", "recvmsg", "sendmsg", "write"];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The section is wrong whatever the host (bad index, errnoRet on an
    /// action that has none, ...).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The section asks for something that this kernel or this libseccomp
    /// cannot do (a flag, an architecture, user notification).
    #[error("{field}: {reason}")]
    Unsupported { field: String, reason: String },
    /// libseccomp refused a rule of the section.
    #[error("{field}: {source}")]
    Rejected {
        field: String,
        #[source]
        source: LibseccompError,
    },
    /// libseccomp failed for no fault of the section (out of memory).
    #[error("seccomp: {what}: {source}")]
    Libseccomp {
        what: &'static str,
        #[source]
        source: LibseccompError,
    },
    /// The kernel refused the filter.
    #[error("seccomp: loading the filter: {source}")]
    Load {
        #[source]
        source: LibseccompError,
    },
    /// The kernel refused the compiled program.
    #[error("seccomp: loading the filter: {source}")]
    LoadProgram {
        #[source]
        source: io::Error,
    },
    /// The filter is loaded but its user-notification fd could not be taken.
    #[error("seccomp: taking the user-notification fd: {source}")]
    NotifyFd {
        #[source]
        source: io::Error,
    },
}

impl SeccompError {
    /// True when the cause is the configuration (the user must change the
    /// seccomp section, including to drop what this host cannot do); false
    /// for failures of libseccomp or of the kernel while loading.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            SeccompError::Invalid { .. }
                | SeccompError::Unsupported { .. }
                | SeccompError::Rejected { .. }
        )
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SeccompError {
    SeccompError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> SeccompError {
    SeccompError::Unsupported {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A compiled seccomp filter, not yet loaded: the plan that [`Filter::load`]
/// hands to libseccomp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default_action: ScmpAction,
    arches: Vec<ArchEntry>,
    attrs: Vec<AttrEntry>,
    rules: Vec<Rule>,
    /// The filter already compiled to BPF (see [`with_cache`]): installed
    /// directly, without building it with libseccomp again.
    program: Option<Vec<u8>>,
    /// The kernel's filter flags of a program read back from the cache by
    /// the section's own key (no plan was made: `attrs` is empty).
    cached_flags: Option<u32>,
}

/// One architecture added to the filter (besides the native one).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ArchEntry {
    field: String,
    name: String,
    arch: ScmpArch,
}

/// A filter attribute that a flag of the section turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attr {
    Tsync,
    Log,
    SpecAllow,
    WaitKillableRecv,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AttrEntry {
    field: String,
    attr: Attr,
}

/// One libseccomp rule: a syscall, an action and conditions that are ANDed
/// (none: the rule matches every call).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `linux.seccomp.syscalls[i].names[j]`, for messages.
    field: String,
    name: String,
    syscall: ScmpSyscall,
    action: ScmpAction,
    conditions: Vec<ScmpArgCompare>,
}

/// Check `spec` and compile it into a [`Filter`].
///
/// Every error names the field that caused it; see
/// [`SeccompError::is_invalid_input`].
pub fn compile(spec: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    let filter = plan(spec)?;
    // A dry run: whatever libseccomp refuses is reported now, in the parent,
    // rather than in the container's init.
    filter.build()?;
    Ok(filter)
}

/// [`compile`], with the BPF program taken from (or added to) the cache
/// in `dir`: a filter seen before costs no libseccomp work at all.
pub fn compile_cached(spec: &LinuxSeccomp, dir: &std::path::Path) -> Result<Filter, SeccompError> {
    // First by the section itself: a profile seen before (Docker's default,
    // every time) costs neither name resolution nor planning (0.3 ms).
    let section = section_key(spec).map(|k| dir.join(format!("{k}.section")));
    if let Some(prog) = section.as_ref().and_then(|p| std::fs::read(p).ok()) {
        if let Some(f) = Filter::from_section_cache(&prog) {
            return Ok(f);
        }
    }
    let filter = plan(spec)?;
    if filter.has_notify() {
        filter.build()?;
        return Ok(filter);
    }
    let filter = cached_program(filter, dir)?;
    if let (Some(p), Some(prog)) = (&section, &filter.program) {
        let mut bytes = filter.flags().to_le_bytes().to_vec();
        bytes.extend_from_slice(prog);
        let _ = crate::state::write_atomic(p, &bytes);
    }
    Ok(filter)
}

/// The key of a seccomp section as it is written (with libseccomp's
/// version, which decides the program).
fn section_key(spec: &LinuxSeccomp) -> Option<String> {
    use sha2::Digest as _;
    let json = serde_json::to_vec(spec).ok()?;
    let mut h = sha2::Sha256::new();
    h.update(libseccomp_version().as_bytes());
    h.update(b"|");
    h.update(&json);
    Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The program of a planned filter from the cache by the plan's key, or
/// compiled now and added to it.
fn cached_program(mut filter: Filter, dir: &std::path::Path) -> Result<Filter, SeccompError> {
    let path = dir.join(format!("{}.bpf", filter.cache_key()));
    if let Ok(prog) = std::fs::read(&path) {
        if !prog.is_empty() && prog.len().is_multiple_of(berth_sys::seccomp::INSN_SIZE) {
            filter.program = Some(prog);
            return Ok(filter);
        }
    }
    // Compiling is the dry run too.
    let prog = filter.to_program()?;
    let _ = std::fs::create_dir_all(dir);
    let _ = crate::state::write_atomic(&path, &prog);
    filter.program = Some(prog);
    Ok(filter)
}

/// The checked plan of a filter, not yet tried with libseccomp.
fn plan(spec: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    let default_action = action(
        spec.default_action(),
        spec.default_errno_ret(),
        &format!("{FIELD}.defaultAction"),
        &format!("{FIELD}.defaultErrnoRet"),
    )?;
    if default_action == ScmpAction::Notify {
        return Err(invalid(
            format!("{FIELD}.defaultAction"),
            "SCMP_ACT_NOTIFY cannot be the default action: the container's init \
             could not hand over the notification fd",
        ));
    }

    let arches = spec
        .architectures()
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, arch)| **arch != Arch::ScmpArchNative)
        .map(|(i, arch)| ArchEntry {
            field: format!("{FIELD}.architectures[{i}]"),
            name: arch.to_string(),
            arch: scmp_arch(*arch),
        })
        .collect();

    let attrs = spec
        .flags()
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, flag)| AttrEntry {
            field: format!("{FIELD}.flags[{i}]"),
            attr: match flag {
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => Attr::Tsync,
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => Attr::Log,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => Attr::SpecAllow,
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => Attr::WaitKillableRecv,
            },
        })
        .collect();

    let mut rules = Vec::new();
    for (i, call) in spec.syscalls().iter().flatten().enumerate() {
        compile_syscall(
            call,
            &format!("{FIELD}.syscalls[{i}]"),
            default_action,
            &mut rules,
        )?;
    }

    if let Some(rule) = rules.iter().find(|r| r.action == ScmpAction::Notify) {
        // User notification needs libseccomp >= 2.5.0 and API level 6, which
        // libseccomp only reports when the kernel has it too.
        let supported = libseccomp::check_api(6, ScmpVersion::from((2, 5, 0)))
            .map_err(|source| unsupported(rule.field.clone(), source.to_string()))?;
        if !supported {
            return Err(unsupported(
                rule.field.clone(),
                format!(
                    "SCMP_ACT_NOTIFY needs libseccomp >= 2.5.0 and Linux >= 5.7 \
                     (libseccomp API level {} here)",
                    libseccomp::get_api()
                ),
            ));
        }
    }

    Ok(Filter {
        default_action,
        arches,
        attrs,
        rules,
        program: None,
        cached_flags: None,
    })
}

/// Append the rules of one `syscalls[]` entry.
fn compile_syscall(
    call: &LinuxSyscall,
    field: &str,
    default_action: ScmpAction,
    rules: &mut Vec<Rule>,
) -> Result<(), SeccompError> {
    let act = action(
        call.action(),
        call.errno_ret(),
        &format!("{field}.action"),
        &format!("{field}.errnoRet"),
    )?;
    let groups = condition_groups(call.args().as_deref().unwrap_or_default(), field)?;
    for (j, name) in call.names().iter().enumerate() {
        if name.is_empty() {
            return Err(invalid(format!("{field}.names[{j}]"), "empty syscall name"));
        }
        if act == ScmpAction::Notify && NOTIFY_FORBIDDEN.contains(&name.as_str()) {
            return Err(invalid(
                format!("{field}.names[{j}]"),
                format!(
                    "SCMP_ACT_NOTIFY cannot be used for {name:?}: the container's init \
                     needs it to hand over the notification fd"
                ),
            ));
        }
    }
    if call.names().is_empty() {
        tracing::debug!(field, "seccomp rule without syscall names ignored");
        return Ok(());
    }
    if act == default_action {
        // libseccomp refuses a rule that does what the default does.
        tracing::debug!(field, "seccomp rule with the default action ignored");
        return Ok(());
    }
    for (j, name) in call.names().iter().enumerate() {
        let field = format!("{field}.names[{j}]");
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            tracing::debug!(field, syscall = %name, "unknown seccomp syscall ignored");
            continue;
        };
        for conditions in &groups {
            rules.push(Rule {
                field: field.clone(),
                name: name.clone(),
                syscall,
                action: act,
                conditions: conditions.clone(),
            });
        }
    }
    Ok(())
}

/// The libseccomp action for an OCI action and its `errnoRet`.
fn action(
    act: LinuxSeccompAction,
    errno_ret: Option<u32>,
    field: &str,
    errno_field: &str,
) -> Result<ScmpAction, SeccompError> {
    let ret = |errno_ret: Option<u32>| -> Result<u16, SeccompError> {
        match errno_ret {
            None => Ok(libc::EPERM as u16),
            Some(v) => u16::try_from(v).map_err(|_| {
                invalid(
                    errno_field,
                    format!("{v} is out of range (0 to {})", u16::MAX),
                )
            }),
        }
    };
    let scmp = match act {
        LinuxSeccompAction::ScmpActErrno => return Ok(ScmpAction::Errno(ret(errno_ret)?.into())),
        LinuxSeccompAction::ScmpActTrace => return Ok(ScmpAction::Trace(ret(errno_ret)?)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    };
    if errno_ret.is_some() {
        return Err(invalid(
            errno_field,
            format!("only SCMP_ACT_ERRNO and SCMP_ACT_TRACE return an errno, not {act} ({field})"),
        ));
    }
    Ok(scmp)
}

/// The conditions of one `syscalls[]` entry, as groups that each make one
/// rule. Normally one group holding every condition (ANDed); when two
/// conditions name the same argument, one group per condition (ORed), as
/// runc does, since libseccomp cannot AND two conditions on one argument.
fn condition_groups(
    args: &[LinuxSeccompArg],
    field: &str,
) -> Result<Vec<Vec<ScmpArgCompare>>, SeccompError> {
    let mut seen = [false; MAX_ARGS];
    let mut repeated = false;
    let mut conditions = Vec::with_capacity(args.len());
    for (k, arg) in args.iter().enumerate() {
        let index = arg.index();
        if index >= MAX_ARGS {
            return Err(invalid(
                format!("{field}.args[{k}].index"),
                format!(
                    "{index} is out of range (a syscall has arguments 0 to {})",
                    MAX_ARGS - 1
                ),
            ));
        }
        repeated |= std::mem::replace(&mut seen[index], true);
        // SCMP_CMP_MASKED_EQ compares `arg & value` with `valueTwo`; the
        // other operators compare the argument with `value`.
        let (op, datum) = match arg.op() {
            LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
            LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
            LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
            LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
            LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
            LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
            LinuxSeccompOperator::ScmpCmpMaskedEq => (
                ScmpCompareOp::MaskedEqual(arg.value()),
                arg.value_two().unwrap_or(0),
            ),
        };
        // `index` < MAX_ARGS, checked above, so it fits in a u32.
        conditions.push(ScmpArgCompare::new(index as u32, op, datum));
    }
    if repeated {
        tracing::debug!(
            field,
            "seccomp conditions on one argument: one rule per condition"
        );
        Ok(conditions.into_iter().map(|c| vec![c]).collect())
    } else {
        Ok(vec![conditions])
    }
}

fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn libseccomp_version() -> String {
    match ScmpVersion::current() {
        Ok(v) => v.to_string(),
        Err(_) => "(unknown version)".to_string(),
    }
}

impl Filter {
    /// A filter from a section-keyed cache entry: its flags (4 bytes, little
    /// endian), then the program.
    fn from_section_cache(bytes: &[u8]) -> Option<Filter> {
        let (flags, prog) = bytes.split_at_checked(4)?;
        if prog.is_empty() || !prog.len().is_multiple_of(berth_sys::seccomp::INSN_SIZE) {
            return None;
        }
        Some(Filter {
            default_action: ScmpAction::Allow,
            arches: Vec::new(),
            attrs: Vec::new(),
            rules: Vec::new(),
            program: Some(prog.to_vec()),
            cached_flags: Some(u32::from_le_bytes(flags.try_into().ok()?)),
        })
    }

    /// True when a rule uses `SCMP_ACT_NOTIFY`: [`Filter::load`] then returns
    /// the user-notification fd, which the caller must hand to the seccomp
    /// agent (`listenerPath`).
    pub fn has_notify(&self) -> bool {
        self.default_action == ScmpAction::Notify
            || self.rules.iter().any(|r| r.action == ScmpAction::Notify)
    }

    /// Install the filter in the calling thread (in every thread of the
    /// process with `SECCOMP_FILTER_FLAG_TSYNC`). Unless `no_new_privs` is
    /// already set, this needs `CAP_SYS_ADMIN`.
    ///
    /// Returns the user-notification fd (close-on-exec) when
    /// [`Filter::has_notify`]. Until the agent reads from it, a notified
    /// syscall of this process blocks.
    pub fn load(&self) -> Result<Option<OwnedFd>, SeccompError> {
        if let (Some(prog), false) = (&self.program, self.has_notify()) {
            return berth_sys::seccomp::set_filter(prog, self.flags())
                .map(|()| None)
                .map_err(|source| SeccompError::LoadProgram { source });
        }
        let ctx = self.build()?;
        // Made before loading: the filter might refuse socketpair.
        let pair = if self.has_notify() {
            Some(UnixStream::pair().map_err(|source| SeccompError::NotifyFd { source })?)
        } else {
            None
        };
        ctx.load().map_err(|source| SeccompError::Load { source })?;
        let Some((tx, rx)) = pair else {
            return Ok(None);
        };
        let raw = ctx
            .get_notify_fd()
            .map_err(|source| SeccompError::NotifyFd {
                source: io::Error::other(source.to_string()),
            })?;
        let fd = own_fd(raw, &tx, &rx).map_err(|source| SeccompError::NotifyFd { source })?;
        Ok(Some(fd))
    }

    /// The kernel's filter flags the plan's attributes ask for.
    fn flags(&self) -> u32 {
        use berth_sys::seccomp as k;
        if let Some(f) = self.cached_flags {
            return f;
        }
        self.attrs.iter().fold(0, |f, a| {
            f | match a.attr {
                Attr::Tsync => k::FLAG_TSYNC,
                Attr::Log => k::FLAG_LOG,
                Attr::SpecAllow => k::FLAG_SPEC_ALLOW,
                Attr::WaitKillableRecv => k::FLAG_WAIT_KILLABLE_RECV,
            }
        })
    }

    /// The filter compiled to a classic BPF program by libseccomp.
    pub fn to_program(&self) -> Result<Vec<u8>, SeccompError> {
        let ctx = self.build()?;
        let fd =
            nix::sys::memfd::memfd_create(c"berth-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .map_err(|e| SeccompError::LoadProgram { source: e.into() })?;
        ctx.export_bpf(&fd)
            .map_err(|source| SeccompError::Libseccomp {
                what: "exporting the filter",
                source,
            })?;
        let mut f = std::fs::File::from(fd);
        let mut prog = Vec::new();
        std::io::Seek::rewind(&mut f)
            .and_then(|_| std::io::Read::read_to_end(&mut f, &mut prog))
            .map_err(|source| SeccompError::LoadProgram { source })?;
        Ok(prog)
    }

    /// What identifies the compiled program: the plan and the libseccomp
    /// version that compiles it.
    fn cache_key(&self) -> String {
        use sha2::Digest as _;
        let plan = format!(
            "{:?}|{:?}|{:?}|{:?}|{}",
            self.default_action,
            self.arches,
            self.attrs,
            self.rules,
            libseccomp_version()
        );
        let d = sha2::Sha256::digest(plan.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Build the libseccomp context that the plan describes.
    fn build(&self) -> Result<ScmpFilterContext, SeccompError> {
        let mut ctx = ScmpFilterContext::new(self.default_action).map_err(|source| {
            SeccompError::Libseccomp {
                what: "creating the filter",
                source,
            }
        })?;
        ctx.set_ctl_nnp(false)
            .map_err(|source| SeccompError::Libseccomp {
                what: "leaving no_new_privs to the runtime",
                source,
            })?;

        for entry in &self.arches {
            // The native architecture is always there; so is one listed twice.
            if ctx.is_arch_present(entry.arch).unwrap_or(false) {
                continue;
            }
            ctx.add_arch(entry.arch).map_err(|source| {
                unsupported(
                    entry.field.clone(),
                    format!(
                        "{} is not supported by libseccomp {}: {source}",
                        entry.name,
                        libseccomp_version()
                    ),
                )
            })?;
        }

        for entry in &self.attrs {
            let (flag, set) = match entry.attr {
                Attr::Tsync => ("SECCOMP_FILTER_FLAG_TSYNC", ctx.set_ctl_tsync(true)),
                Attr::Log => ("SECCOMP_FILTER_FLAG_LOG", ctx.set_ctl_log(true)),
                Attr::SpecAllow => ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", ctx.set_ctl_ssb(true)),
                Attr::WaitKillableRecv => (
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
                    ctx.set_ctl_waitkill(true),
                ),
            };
            set.map_err(|source| {
                unsupported(
                    entry.field.clone(),
                    format!(
                        "{flag} is not supported by libseccomp {} or this kernel: {source}",
                        libseccomp_version()
                    ),
                )
            })?;
        }

        if self.rules.len() > TREE_MIN_RULES {
            if let Err(e) = ctx.set_ctl_optimize(2) {
                // Older libseccomp: a linear filter works too, just slower.
                tracing::debug!(error = %e, "seccomp binary tree optimization not available");
            }
        }

        for rule in &self.rules {
            let added = if rule.conditions.is_empty() {
                ctx.add_rule(rule.action, rule.syscall)
            } else {
                ctx.add_rule_conditional(rule.action, rule.syscall, &rule.conditions)
            };
            added.map_err(|source| SeccompError::Rejected {
                field: format!("{} ({:?})", rule.field, rule.name),
                source,
            })?;
        }
        Ok(ctx)
    }
}

/// Take ownership of the listener fd that libseccomp keeps as a bare number
/// (its own copy is close-on-exec and goes away at `execve`).
///
/// Safe Rust cannot turn a number into an [`OwnedFd`], and this crate
/// forbids `unsafe`, so the descriptor goes through a socket pair: the kernel
/// installs a fresh descriptor on receipt (close-on-exec), which we own.
fn own_fd(raw: RawFd, tx: &UnixStream, rx: &UnixStream) -> io::Result<OwnedFd> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

    let rights = [raw];
    sendmsg::<UnixAddr>(
        tx.as_raw_fd(),
        &[IoSlice::new(b"s")],
        &[ControlMessage::ScmRights(&rights)],
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    let mut byte = [0u8; 1];
    let (_, fd) = berth_sys::fd::recv_with_fd(rx.as_fd(), &mut byte)?;
    fd.ok_or_else(|| io::Error::other("no descriptor received from the socket pair"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};
    use serde_json::{json, Value};
    use std::os::unix::process::ExitStatusExt;
    use std::path::PathBuf;
    use std::process::{Command, ExitStatus};

    // ---- helpers -------------------------------------------------------

    fn syscall(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscallBuilder {
        LinuxSyscallBuilder::default()
            .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .action(action)
    }

    fn arg(index: usize, op: LinuxSeccompOperator, value: u64) -> LinuxSeccompArg {
        LinuxSeccompArgBuilder::default()
            .index(index)
            .op(op)
            .value(value)
            .build()
            .unwrap()
    }

    fn masked(index: usize, mask: u64, value: u64) -> LinuxSeccompArg {
        LinuxSeccompArgBuilder::default()
            .index(index)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .value(mask)
            .value_two(value)
            .build()
            .unwrap()
    }

    fn spec(default: LinuxSeccompAction, calls: Vec<LinuxSyscall>) -> LinuxSeccomp {
        LinuxSeccompBuilder::default()
            .default_action(default)
            .syscalls(calls)
            .build()
            .unwrap()
    }

    fn compile_err(spec: &LinuxSeccomp) -> SeccompError {
        match compile(spec) {
            Ok(f) => panic!("expected an error, compiled {f:?}"),
            Err(e) => e,
        }
    }

    fn rule_names(filter: &Filter) -> Vec<&str> {
        filter.rules.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn compiled_programs_are_cached_and_refused_when_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let sp = spec(
            LinuxSeccompAction::ScmpActAllow,
            vec![
                syscall(&["mkdirat", "mkdir"], LinuxSeccompAction::ScmpActErrno)
                    .errno_ret(1u32)
                    .build()
                    .unwrap(),
            ],
        );
        let entries = |ext: &str| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == ext))
                .collect();
            v.sort();
            v
        };
        let a = compile_cached(&sp, dir.path()).unwrap();
        assert_eq!(entries("bpf").len(), 1, "one program stored by its plan");
        assert_eq!(entries("section").len(), 1, "and by its section");
        let b = compile_cached(&sp, dir.path()).unwrap();
        assert_eq!(a.program, b.program, "the second comes from the cache");
        assert_eq!(a.flags(), b.flags());
        assert!(b.rules.is_empty(), "taken by the section: nothing planned");
        assert_eq!(a.program.as_ref().unwrap(), &a.to_program().unwrap());
        // A flag is part of the section, and of what is stored with it.
        let mut flagged = sp.clone();
        flagged.set_flags(Some(vec![LinuxSeccompFilterFlag::SeccompFilterFlagLog]));
        let f1 = compile_cached(&flagged, dir.path()).unwrap();
        let f2 = compile_cached(&flagged, dir.path()).unwrap();
        assert_eq!(f2.flags(), berth_sys::seccomp::FLAG_LOG);
        assert_eq!(f1.flags(), f2.flags());
        // A different filter is another entry.
        let other = spec(LinuxSeccompAction::ScmpActAllow, vec![]);
        compile_cached(&other, dir.path()).unwrap();
        assert_eq!(entries("section").len(), 3);
        // Truncated cache entries are not used: it is compiled again.
        for p in entries("section").iter().chain(entries("bpf").iter()) {
            std::fs::write(p, b"123").unwrap();
        }
        let c = compile_cached(&sp, dir.path()).unwrap();
        assert_eq!(c.program, a.program);
        assert!(!c.rules.is_empty(), "planned again");
        // The kernel takes the program and enforces it (in a child).
        assert_child_ok("cached-program");
    }

    // ---- Docker's default profile -------------------------------------

    fn reference_profile() -> PathBuf {
        // shared/ sits beside the repository: <repo>/../shared/reference.
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/reference/seccomp-default.json")
    }

    /// Docker's name for the native architecture, as used in its profile's
    /// `includes`/`excludes`.
    fn docker_arch() -> &'static str {
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "s390x" => "s390x",
            "powerpc64" => "ppc64le",
            "riscv64" => "riscv64",
            "loongarch64" => "loong64",
            other => other,
        }
    }

    fn native_scmp_arch() -> &'static str {
        match std::env::consts::ARCH {
            "x86_64" => "SCMP_ARCH_X86_64",
            "aarch64" => "SCMP_ARCH_AARCH64",
            "s390x" => "SCMP_ARCH_S390X",
            "riscv64" => "SCMP_ARCH_RISCV64",
            "powerpc64" => "SCMP_ARCH_PPC64LE",
            "loongarch64" => "SCMP_ARCH_LOONGARCH64",
            _ => "SCMP_ARCH_NATIVE",
        }
    }

    fn list<'a>(v: &'a Value, a: &str, b: &str) -> Vec<&'a str> {
        v.get(a)
            .and_then(|x| x.get(b))
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// Docker's profile format to the OCI section, as dockerd does it for a
    /// container without added capabilities on this architecture: the
    /// `archMap` entry of the native arch gives `architectures`; an entry
    /// applies unless its `includes` needs a capability or another arch, or
    /// its `excludes` names this arch (`minKernel` is taken as met).
    fn docker_to_oci(profile: &Value) -> LinuxSeccomp {
        let native = native_scmp_arch();
        let mut arches = Vec::new();
        for entry in profile["archMap"].as_array().into_iter().flatten() {
            if entry["architecture"] == native {
                arches.push(json!(native));
                for sub in entry["subArchitectures"].as_array().into_iter().flatten() {
                    arches.push(sub.clone());
                }
            }
        }
        let mut syscalls = Vec::new();
        for call in profile["syscalls"].as_array().into_iter().flatten() {
            let inc_arches = list(call, "includes", "arches");
            if !list(call, "includes", "caps").is_empty()
                || (!inc_arches.is_empty() && !inc_arches.contains(&docker_arch()))
                || list(call, "excludes", "arches").contains(&docker_arch())
            {
                continue;
            }
            let mut oci = json!({ "names": call["names"], "action": call["action"] });
            for key in ["errnoRet", "args"] {
                if let Some(v) = call.get(key).filter(|v| !v.is_null()) {
                    oci[key] = v.clone();
                }
            }
            syscalls.push(oci);
        }
        let oci = json!({
            "defaultAction": profile["defaultAction"],
            "defaultErrnoRet": profile["defaultErrnoRet"],
            "architectures": arches,
            "syscalls": syscalls,
        });
        serde_json::from_value(oci).unwrap()
    }

    fn docker_default() -> LinuxSeccomp {
        let path = reference_profile();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        docker_to_oci(&serde_json::from_str(&text).unwrap())
    }

    #[test]
    fn docker_default_profile_compiles() {
        let spec = docker_default();
        let filter = compile(&spec).unwrap();
        assert!(!filter.has_notify());
        assert_eq!(filter.default_action, ScmpAction::Errno(libc::EPERM));
        // Several hundred syscalls, minus those unknown on this arch.
        assert!(filter.rules.len() > 300, "{} rules", filter.rules.len());
        let names = rule_names(&filter);
        assert!(names.contains(&"read"));
        assert!(
            !names.contains(&"mount"),
            "CAP_SYS_ADMIN entries are left out"
        );
        // clone3 returns ENOSYS so that libc falls back to clone.
        let clone3 = filter.rules.iter().find(|r| r.name == "clone3").unwrap();
        assert_eq!(clone3.action, ScmpAction::Errno(libc::ENOSYS));
        if std::env::consts::ARCH == "x86_64" {
            let arches: Vec<_> = filter.arches.iter().map(|a| a.arch).collect();
            assert!(arches.contains(&ScmpArch::X86) && arches.contains(&ScmpArch::X32));
            assert!(names.contains(&"arch_prctl"));
            // A name of the 32-bit ABIs only resolves to a libseccomp
            // pseudo-syscall, which libseccomp maps per architecture.
            let chown32 = filter.rules.iter().find(|r| r.name == "chown32").unwrap();
            assert!(chown32.syscall.as_raw_syscall() < 0);
        }
    }

    // ---- plans ----------------------------------------------------------

    #[test]
    fn errno_and_trace_default_to_eperm() {
        let s = spec(
            LinuxSeccompAction::ScmpActAllow,
            vec![
                syscall(&["getcwd"], LinuxSeccompAction::ScmpActErrno)
                    .build()
                    .unwrap(),
                syscall(&["mkdir"], LinuxSeccompAction::ScmpActErrno)
                    .errno_ret(38u32)
                    .build()
                    .unwrap(),
                syscall(&["chdir"], LinuxSeccompAction::ScmpActTrace)
                    .build()
                    .unwrap(),
                syscall(&["fchdir"], LinuxSeccompAction::ScmpActKill)
                    .build()
                    .unwrap(),
            ],
        );
        let f = compile(&s).unwrap();
        let actions: Vec<_> = f.rules.iter().map(|r| r.action).collect();
        assert_eq!(
            actions,
            [
                ScmpAction::Errno(libc::EPERM),
                ScmpAction::Errno(38),
                ScmpAction::Trace(libc::EPERM as u16),
                ScmpAction::KillThread,
            ]
        );
    }

    #[test]
    fn default_errno_ret_is_used() {
        let mut s = spec(LinuxSeccompAction::ScmpActErrno, vec![]);
        s.set_default_errno_ret(Some(38));
        assert_eq!(compile(&s).unwrap().default_action, ScmpAction::Errno(38));
    }

    #[test]
    fn rules_like_the_default_and_unknown_names_are_skipped() {
        let s = spec(
            LinuxSeccompAction::ScmpActErrno,
            vec![
                // Same action as the default (EPERM): skipped.
                syscall(&["getpid"], LinuxSeccompAction::ScmpActErrno)
                    .build()
                    .unwrap(),
                // Same action, other errno: kept.
                syscall(&["getppid"], LinuxSeccompAction::ScmpActErrno)
                    .errno_ret(38u32)
                    .build()
                    .unwrap(),
                syscall(
                    &["read", "no_such_syscall_at_all", "write"],
                    LinuxSeccompAction::ScmpActAllow,
                )
                .build()
                .unwrap(),
                syscall(&[], LinuxSeccompAction::ScmpActAllow)
                    .build()
                    .unwrap(),
            ],
        );
        let f = compile(&s).unwrap();
        assert_eq!(rule_names(&f), ["getppid", "read", "write"]);
        assert_eq!(f.rules[2].field, "linux.seccomp.syscalls[2].names[2]");
    }

    #[test]
    fn conditions_on_distinct_args_are_anded() {
        let s = spec(
            LinuxSeccompAction::ScmpActAllow,
            vec![syscall(&["socket"], LinuxSeccompAction::ScmpActErrno)
                .args(vec![
                    arg(0, LinuxSeccompOperator::ScmpCmpEq, 2),
                    masked(1, 0xf, 2),
                ])
                .build()
                .unwrap()],
        );
        let f = compile(&s).unwrap();
        assert_eq!(f.rules.len(), 1);
        assert_eq!(
            f.rules[0].conditions,
            [
                ScmpArgCompare::new(0, ScmpCompareOp::Equal, 2),
                ScmpArgCompare::new(1, ScmpCompareOp::MaskedEqual(0xf), 2),
            ]
        );
    }

    #[test]
    fn conditions_on_one_arg_become_one_rule_each() {
        let s = spec(
            LinuxSeccompAction::ScmpActAllow,
            vec![syscall(&["socket"], LinuxSeccompAction::ScmpActErrno)
                .args(vec![
                    arg(0, LinuxSeccompOperator::ScmpCmpEq, 2),
                    arg(0, LinuxSeccompOperator::ScmpCmpEq, 10),
                    arg(1, LinuxSeccompOperator::ScmpCmpNe, 3),
                ])
                .build()
                .unwrap()],
        );
        let f = compile(&s).unwrap();
        let conditions: Vec<_> = f.rules.iter().map(|r| r.conditions.clone()).collect();
        assert_eq!(
            conditions,
            [
                vec![ScmpArgCompare::new(0, ScmpCompareOp::Equal, 2)],
                vec![ScmpArgCompare::new(0, ScmpCompareOp::Equal, 10)],
                vec![ScmpArgCompare::new(1, ScmpCompareOp::NotEqual, 3)],
            ]
        );
    }

    #[test]
    fn every_action_compiles() {
        use LinuxSeccompAction::*;
        let actions = [
            ScmpActKill,
            ScmpActKillProcess,
            ScmpActKillThread,
            ScmpActTrap,
            ScmpActErrno,
            ScmpActTrace,
            ScmpActLog,
            ScmpActNotify,
        ];
        let calls = actions
            .iter()
            .zip([
                "getpid", "getppid", "getuid", "getgid", "geteuid", "getegid", "gettid", "uname",
            ])
            .map(|(a, n)| syscall(&[n], *a).build().unwrap())
            .collect();
        let f = compile(&spec(ScmpActAllow, calls)).unwrap();
        assert_eq!(f.rules.len(), actions.len());
        assert!(f.has_notify());
    }

    #[test]
    fn architectures_and_flags_compile() {
        let mut s = spec(
            LinuxSeccompAction::ScmpActErrno,
            vec![syscall(&["read"], LinuxSeccompAction::ScmpActAllow)
                .build()
                .unwrap()],
        );
        s.set_architectures(Some(vec![
            Arch::ScmpArchNative,
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
            Arch::ScmpArchAarch64,
            Arch::ScmpArchArm,
            Arch::ScmpArchX86,
        ]));
        s.set_flags(Some(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
        ]));
        let f = compile(&s).unwrap();
        assert_eq!(f.arches.len(), 6);
        assert_eq!(f.arches[0].name, "SCMP_ARCH_X86_64");
        assert_eq!(f.attrs.len(), 3);
    }

    #[test]
    fn filter_is_plain_data() {
        fn send_sync<T: Send + Sync + Clone>() {}
        send_sync::<Filter>();
    }

    // ---- invalid input ------------------------------------------------

    #[test]
    fn arg_index_6_is_rejected() {
        let s = spec(
            LinuxSeccompAction::ScmpActAllow,
            vec![
                syscall(&["read"], LinuxSeccompAction::ScmpActErrno)
                    .build()
                    .unwrap(),
                syscall(&["socket"], LinuxSeccompAction::ScmpActErrno)
                    .args(vec![
                        arg(0, LinuxSeccompOperator::ScmpCmpEq, 2),
                        arg(6, LinuxSeccompOperator::ScmpCmpEq, 1),
                    ])
                    .build()
                    .unwrap(),
            ],
        );
        let e = compile_err(&s);
        assert!(e.is_invalid_input());
        assert_eq!(
            e.to_string(),
            "linux.seccomp.syscalls[1].args[1].index: 6 is out of range \
             (a syscall has arguments 0 to 5)"
        );
    }

    #[test]
    fn errno_ret_on_other_actions_is_rejected() {
        let s = spec(
            LinuxSeccompAction::ScmpActErrno,
            vec![syscall(&["read"], LinuxSeccompAction::ScmpActAllow)
                .errno_ret(1u32)
                .build()
                .unwrap()],
        );
        let e = compile_err(&s);
        assert!(e.is_invalid_input());
        assert_eq!(
            e.to_string(),
            "linux.seccomp.syscalls[0].errnoRet: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE \
             return an errno, not SCMP_ACT_ALLOW (linux.seccomp.syscalls[0].action)"
        );

        let mut s = spec(LinuxSeccompAction::ScmpActKillProcess, vec![]);
        s.set_default_errno_ret(Some(1));
        assert_eq!(
            compile_err(&s).to_string(),
            "linux.seccomp.defaultErrnoRet: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE \
             return an errno, not SCMP_ACT_KILL_PROCESS (linux.seccomp.defaultAction)"
        );
    }

    #[test]
    fn errno_out_of_range_is_rejected() {
        let s = spec(
            LinuxSeccompAction::ScmpActAllow,
            vec![syscall(&["read"], LinuxSeccompAction::ScmpActErrno)
                .errno_ret(70000u32)
                .build()
                .unwrap()],
        );
        assert_eq!(
            compile_err(&s).to_string(),
            "linux.seccomp.syscalls[0].errnoRet: 70000 is out of range (0 to 65535)"
        );
    }

    #[test]
    fn empty_syscall_name_is_rejected() {
        let s = spec(
            LinuxSeccompAction::ScmpActErrno,
            vec![syscall(&["read", ""], LinuxSeccompAction::ScmpActAllow)
                .build()
                .unwrap()],
        );
        assert_eq!(
            compile_err(&s).to_string(),
            "linux.seccomp.syscalls[0].names[1]: empty syscall name"
        );
    }

    #[test]
    fn notify_limits() {
        let s = spec(LinuxSeccompAction::ScmpActNotify, vec![]);
        let e = compile_err(&s);
        assert!(e.is_invalid_input());
        assert!(e
            .to_string()
            .starts_with("linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default"));

        let s = spec(
            LinuxSeccompAction::ScmpActAllow,
            vec![
                syscall(&["mkdir", "write"], LinuxSeccompAction::ScmpActNotify)
                    .build()
                    .unwrap(),
            ],
        );
        assert!(compile_err(&s).to_string().starts_with(
            "linux.seccomp.syscalls[0].names[1]: SCMP_ACT_NOTIFY cannot be used for \"write\""
        ));
    }

    /// Flags and architectures that this libseccomp may lack are reported
    /// against their field; where it has them they compile.
    #[test]
    fn host_dependent_flag_and_arch() {
        let mut s = spec(LinuxSeccompAction::ScmpActAllow, vec![]);
        s.set_flags(Some(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
        ]));
        let has_waitkill = libseccomp::check_api(7, ScmpVersion::from((2, 6, 0))).unwrap_or(false);
        match compile(&s) {
            Ok(_) => assert!(has_waitkill),
            Err(e) => {
                assert!(!has_waitkill);
                assert!(e.is_invalid_input());
                assert!(
                    e.to_string().starts_with(
                        "linux.seccomp.flags[1]: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV \
                         is not supported by libseccomp"
                    ),
                    "{e}"
                );
            }
        }

        let mut s = spec(LinuxSeccompAction::ScmpActAllow, vec![]);
        s.set_architectures(Some(vec![Arch::ScmpArchX86, Arch::ScmpArchLoongarch64]));
        let v = ScmpVersion::current().unwrap();
        match compile(&s) {
            Ok(_) => assert!((v.major, v.minor) >= (2, 6)),
            Err(e) => assert!(
                e.to_string().starts_with(
                    "linux.seccomp.architectures[1]: SCMP_ARCH_LOONGARCH64 is not supported \
                     by libseccomp"
                ),
                "{e}"
            ),
        }
    }

    /// Unknown names of actions, operators, architectures and flags are
    /// refused when `config.json` is parsed (the oci-spec types are enums),
    /// with the path of the field and the value.
    #[test]
    fn unknown_names_fail_to_parse() {
        let base = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [{
                "names": ["socket"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{ "index": 0, "value": 2, "op": "SCMP_CMP_EQ" }]
            }]
        });
        let parse = |v: &Value| -> Result<LinuxSeccomp, String> {
            let text = v.to_string();
            let de = &mut serde_json::Deserializer::from_str(&text);
            serde_path_to_error::deserialize(de).map_err(|e| format!("{}: {}", e.path(), e.inner()))
        };
        compile(&parse(&base).unwrap()).unwrap();

        let cases = [
            (
                "/defaultAction",
                json!("SCMP_ACT_FOO"),
                "defaultAction: unknown variant `SCMP_ACT_FOO`",
            ),
            (
                "/syscalls/0/action",
                json!("SCMP_ACT_BAR"),
                "syscalls[0].action: unknown variant `SCMP_ACT_BAR`",
            ),
            (
                "/syscalls/0/args/0/op",
                json!("SCMP_CMP_ABOUT"),
                "syscalls[0].args[0].op: unknown variant `SCMP_CMP_ABOUT`",
            ),
            (
                "/architectures/0",
                json!("SCMP_ARCH_VAX"),
                "architectures[0]: unknown variant `SCMP_ARCH_VAX`",
            ),
            (
                "/flags/0",
                json!("SECCOMP_FILTER_FLAG_FAST"),
                "flags[0]: unknown variant `SECCOMP_FILTER_FLAG_FAST`",
            ),
        ];
        for (pointer, value, want) in cases {
            let mut v = base.clone();
            *v.pointer_mut(pointer).unwrap() = value;
            let e = parse(&v).unwrap_err();
            assert!(e.starts_with(want), "{e}");
        }
    }

    // ---- end to end: a child process loads the filter ------------------

    /// Set in the child's environment to the scenario it must run.
    const CHILD_ENV: &str = "BERTH_SECCOMP_TEST_CHILD";

    /// Run `scenario` in a fresh copy of this test binary, where
    /// [`child_entry`] runs it; returns how the child ended.
    fn run_child(scenario: &str) -> ExitStatus {
        let module = module_path!();
        let test = format!(
            "{}::child_entry",
            module.split_once("::").map_or(module, |(_, rest)| rest)
        );
        let out = Command::new(std::env::current_exe().unwrap())
            .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, scenario)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "child {scenario}: {:?}\nstdout:\n{}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status
    }

    fn assert_child_ok(scenario: &str) {
        let status = run_child(scenario);
        assert_eq!(status.code(), Some(CHILD_OK), "{scenario}: {status:?}");
    }

    /// Not a test of its own: the body of the child process of the tests
    /// below. Without `BERTH_SECCOMP_TEST_CHILD` it does nothing.
    #[test]
    fn child_entry() {
        let Ok(scenario) = std::env::var(CHILD_ENV) else {
            return;
        };
        let code = child_main(&scenario);
        std::process::exit(code);
    }

    /// Exit code of a scenario that went as expected (not 0, so that a child
    /// that ran no test at all cannot pass).
    const CHILD_OK: i32 = 99;
    const CHILD_COMPILE_FAILED: i32 = 200;
    const CHILD_LOAD_FAILED: i32 = 201;
    const CHILD_UNEXPECTED: i32 = 202;

    fn errno_of(e: &io::Error) -> i32 {
        e.raw_os_error().unwrap_or(CHILD_UNEXPECTED)
    }

    fn child_load(spec: &LinuxSeccomp) -> Result<Option<OwnedFd>, i32> {
        // No core files from the scenarios that end in SIGSYS.
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
        let root = nix::unistd::geteuid().is_root();
        if !root {
            // Without CAP_SYS_ADMIN the kernel wants no_new_privs first.
            nix::sys::prctl::set_no_new_privs().map_err(|_| CHILD_UNEXPECTED)?;
        }
        let filter = compile(spec).map_err(|e| {
            eprintln!("compile: {e}");
            CHILD_COMPILE_FAILED
        })?;
        let fd = filter.load().map_err(|e| {
            eprintln!("load: {e}");
            CHILD_LOAD_FAILED
        })?;
        if root {
            // The filter must leave no_new_privs alone.
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            if !status.lines().any(|l| l == "NoNewPrivs:\t0") {
                eprintln!("no_new_privs was set by load");
                return Err(CHILD_UNEXPECTED);
            }
        }
        Ok(fd)
    }

    fn child_main(scenario: &str) -> i32 {
        match child_scenario(scenario) {
            Ok(code) | Err(code) => code,
        }
    }

    /// Ok(code) ends the child with `code`: [`CHILD_OK`], a small number
    /// telling which check failed, or the errno for scenarios that say so.
    fn child_scenario(scenario: &str) -> Result<i32, i32> {
        use LinuxSeccompAction::*;
        let tmp = std::env::temp_dir().join(format!("berth-seccomp-{}", std::process::id()));
        match scenario {
            // Returns the errno of mkdir: 38 expected.
            "mkdir" => {
                let s = spec(
                    ScmpActAllow,
                    vec![syscall(&["mkdir", "mkdirat"], ScmpActErrno)
                        .errno_ret(38u32)
                        .build()
                        .unwrap()],
                );
                child_load(&s)?;
                Ok(match std::fs::create_dir(&tmp) {
                    Ok(()) => {
                        let _ = std::fs::remove_dir(&tmp);
                        0
                    }
                    Err(e) => errno_of(&e),
                })
            }
            // The filter installed from its cached BPF program.
            "cached-program" => {
                let s = spec(
                    ScmpActAllow,
                    vec![syscall(&["mkdir", "mkdirat"], ScmpActErrno)
                        .errno_ret(38u32)
                        .build()
                        .unwrap()],
                );
                let _ =
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
                let _ = nix::sys::prctl::set_no_new_privs();
                let cache = tmp.with_extension("cache");
                let first = compile_cached(&s, &cache).map_err(|_| CHILD_COMPILE_FAILED)?;
                let filter = compile_cached(&s, &cache).map_err(|_| CHILD_COMPILE_FAILED)?;
                let _ = std::fs::remove_dir_all(&cache);
                if filter.program.is_none() || filter.program != first.program {
                    return Ok(1);
                }
                filter.load().map_err(|_| CHILD_LOAD_FAILED)?;
                Ok(match std::fs::create_dir(&tmp) {
                    Err(e) if e.raw_os_error() == Some(38) => CHILD_OK,
                    Ok(()) => {
                        let _ = std::fs::remove_dir(&tmp);
                        2
                    }
                    Err(_) => 3,
                })
            }
            // Returns the errno of getcwd: EPERM expected.
            "getcwd" => {
                let s = spec(
                    ScmpActAllow,
                    vec![syscall(&["getcwd"], ScmpActErrno).build().unwrap()],
                );
                child_load(&s)?;
                Ok(std::env::current_dir().map_or_else(|e| errno_of(&e), |_| 0))
            }
            // IPv4 and IPv6 sockets refused with EACCES (two conditions on
            // arg 0: ORed), unix sockets still work.
            "socket" => {
                let s = spec(
                    ScmpActAllow,
                    vec![syscall(&["socket"], ScmpActErrno)
                        .errno_ret(libc::EACCES as u32)
                        .args(vec![
                            arg(0, LinuxSeccompOperator::ScmpCmpEq, libc::AF_INET as u64),
                            arg(0, LinuxSeccompOperator::ScmpCmpEq, libc::AF_INET6 as u64),
                        ])
                        .build()
                        .unwrap()],
                );
                child_load(&s)?;
                let v4 = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| errno_of(&e));
                let v6 = std::net::UdpSocket::bind("[::1]:0").map_err(|e| errno_of(&e));
                let unix = std::os::unix::net::UnixDatagram::unbound();
                if v4.err() != Some(libc::EACCES) {
                    return Ok(1);
                }
                if v6.err() != Some(libc::EACCES) {
                    return Ok(2);
                }
                if unix.is_err() {
                    return Ok(3);
                }
                Ok(CHILD_OK)
            }
            // openat with O_CREAT refused with EROFS (MASKED_EQ: value is
            // the mask, valueTwo the expected bits); plain opens work.
            "masked" => {
                let creat = libc::O_CREAT as u64;
                let s = spec(
                    ScmpActAllow,
                    vec![
                        syscall(&["openat"], ScmpActErrno)
                            .errno_ret(libc::EROFS as u32)
                            .args(vec![masked(2, creat, creat)])
                            .build()
                            .unwrap(),
                        syscall(&["open"], ScmpActErrno)
                            .errno_ret(libc::EROFS as u32)
                            .args(vec![masked(1, creat, creat)])
                            .build()
                            .unwrap(),
                    ],
                );
                child_load(&s)?;
                match std::fs::File::create(&tmp) {
                    Err(e) if errno_of(&e) == libc::EROFS => {}
                    _ => return Ok(1),
                }
                if std::fs::File::open("/proc/self/status").is_err() {
                    return Ok(2);
                }
                Ok(CHILD_OK)
            }
            // Killed by SIGSYS.
            "kill" => {
                let s = spec(
                    ScmpActAllow,
                    vec![syscall(&["getppid"], ScmpActKillProcess).build().unwrap()],
                );
                child_load(&s)?;
                let _ = nix::unistd::getppid();
                Ok(1)
            }
            // Every flag this host supports, and the extra architectures.
            "flags" => {
                let mut s = spec(
                    ScmpActAllow,
                    vec![syscall(&["getcwd"], ScmpActErrno).build().unwrap()],
                );
                s.set_flags(Some(vec![
                    LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
                    LinuxSeccompFilterFlag::SeccompFilterFlagLog,
                    LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
                ]));
                if std::env::consts::ARCH == "x86_64" {
                    s.set_architectures(Some(vec![Arch::ScmpArchX86, Arch::ScmpArchX32]));
                }
                child_load(&s)?;
                Ok(std::env::current_dir().map_or_else(|e| errno_of(&e), |_| 0))
            }
            // Docker's default profile: unshare is refused with EPERM, and
            // threads still start (clone3 gets ENOSYS, libc falls back to
            // clone, which the profile allows without namespace flags).
            "docker" => {
                let s = docker_default();
                child_load(&s)?;
                match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS) {
                    Err(nix::errno::Errno::EPERM) => {}
                    _ => return Ok(1),
                }
                match std::thread::spawn(|| 7).join() {
                    Ok(7) => {}
                    _ => return Ok(2),
                }
                if std::env::current_dir().is_err() {
                    return Ok(3);
                }
                Ok(CHILD_OK)
            }
            // mkdir is sent to an agent (a thread here) that answers EXDEV.
            "notify" => {
                let mut s = spec(
                    ScmpActAllow,
                    vec![syscall(&["mkdir", "mkdirat"], ScmpActNotify)
                        .build()
                        .unwrap()],
                );
                // TSYNC and a listener together need libseccomp's help with
                // the kernel (SECCOMP_FILTER_FLAG_TSYNC_ESRCH).
                s.set_flags(Some(vec![LinuxSeccompFilterFlag::SeccompFilterFlagTsync]));
                let Some(fd) = child_load(&s)? else {
                    return Ok(1);
                };
                let agent = std::thread::spawn(move || -> Result<(), String> {
                    let req = libseccomp::ScmpNotifReq::receive(fd.as_raw_fd())
                        .map_err(|e| e.to_string())?;
                    let resp = libseccomp::ScmpNotifResp::new_error(
                        req.id,
                        -libc::EXDEV,
                        libseccomp::ScmpNotifRespFlags::empty(),
                    );
                    resp.respond(fd.as_raw_fd()).map_err(|e| e.to_string())
                });
                let made = std::fs::create_dir(&tmp);
                match agent.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        eprintln!("agent: {e}");
                        return Ok(2);
                    }
                    Err(_) => return Ok(2),
                }
                match made {
                    Err(e) if errno_of(&e) == libc::EXDEV => Ok(CHILD_OK),
                    _ => Ok(3),
                }
            }
            other => {
                eprintln!("unknown scenario {other}");
                Err(CHILD_UNEXPECTED)
            }
        }
    }

    #[test]
    fn errno_ret_is_returned() {
        assert_eq!(run_child("mkdir").code(), Some(38));
    }

    #[test]
    fn errno_without_errno_ret_is_eperm() {
        assert_eq!(run_child("getcwd").code(), Some(libc::EPERM));
    }

    #[test]
    fn args_conditions_filter_sockets() {
        assert_child_ok("socket");
    }

    #[test]
    fn masked_eq_filters_open_flags() {
        assert_child_ok("masked");
    }

    #[test]
    fn kill_process_kills_with_sigsys() {
        let status = run_child("kill");
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}");
    }

    #[test]
    fn flags_and_architectures_load() {
        assert_eq!(run_child("flags").code(), Some(libc::EPERM));
    }

    #[test]
    fn docker_default_profile_loads() {
        assert_child_ok("docker");
    }

    #[test]
    fn notify_hands_over_the_listener_fd() {
        assert_child_ok("notify");
    }
}
