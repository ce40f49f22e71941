//! The device controller: `linux.resources.devices` rules, their cgroup v1
//! form (lines for `devices.allow`/`devices.deny`) and their cgroup v2 form
//! (a `BPF_PROG_TYPE_CGROUP_DEVICE` program assembled here).
//!
//! Semantics on both versions: everything is denied, then the rules apply in
//! order and the last rule matching an access decides.

use super::CgroupError;
use berth_sys::bpf::Insn;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// Access bits, as the kernel's `BPF_DEVCG_ACC_*`.
pub const ACC_MKNOD: u8 = 1;
pub const ACC_READ: u8 = 2;
pub const ACC_WRITE: u8 = 4;
pub const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// Which kind of device node a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    All,
    Block,
    Char,
}

impl DeviceKind {
    /// The kernel's `BPF_DEVCG_DEV_*` value (0 for "all").
    fn bpf_type(self) -> i32 {
        match self {
            DeviceKind::All => 0,
            DeviceKind::Block => 1,
            DeviceKind::Char => 2,
        }
    }
}

/// One normalised device rule. `None` for major or minor is a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `ACC_*` bits.
    pub access: u8,
}

/// Parse an access string ("rwm", "r", ""). Empty means all three, as in
/// runc and crun.
pub fn parse_access(s: &str) -> Result<u8, String> {
    if s.is_empty() {
        return Ok(ACC_ALL);
    }
    let mut bits = 0;
    for c in s.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return Err(format!("{s:?}: unknown access {c:?} (allowed: r, w, m)")),
        };
    }
    Ok(bits)
}

fn access_string(bits: u8) -> String {
    let mut s = String::new();
    if bits & ACC_READ != 0 {
        s.push('r');
    }
    if bits & ACC_WRITE != 0 {
        s.push('w');
    }
    if bits & ACC_MKNOD != 0 {
        s.push('m');
    }
    s
}

/// A major or minor number: absent or -1 is a wildcard; the rest must fit
/// the kernel's 32-bit field (and a BPF immediate).
fn number(field: &str, v: Option<i64>) -> Result<Option<u32>, CgroupError> {
    match v {
        None | Some(-1) => Ok(None),
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(CgroupError::invalid(
            field,
            format!("{n} is not a device number"),
        )),
    }
}

impl DeviceRule {
    /// The rule for `linux.resources.devices[index]`. `Ok(None)` for FIFO
    /// (`p`) rules, which no device controller can express (FIFOs are not
    /// device nodes); the caller warns.
    pub fn from_spec(
        index: usize,
        r: &LinuxDeviceCgroup,
    ) -> Result<Option<DeviceRule>, CgroupError> {
        let field = |f: &str| format!("linux.resources.devices[{index}].{f}");
        let kind = match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DeviceKind::All,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::P => return Ok(None),
        };
        let access = parse_access(r.access().as_deref().unwrap_or(""))
            .map_err(|m| CgroupError::invalid(field("access"), m))?;
        Ok(Some(DeviceRule {
            allow: r.allow(),
            kind,
            major: number(&field("major"), r.major())?,
            minor: number(&field("minor"), r.minor())?,
            access,
        }))
    }

    const fn chr(major: u32, minor: Option<u32>, access: u8) -> DeviceRule {
        DeviceRule {
            allow: true,
            kind: DeviceKind::Char,
            major: Some(major),
            minor,
            access,
        }
    }

    /// True when the rule matches every access to every device.
    pub fn matches_everything(&self) -> bool {
        self.kind == DeviceKind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ACC_ALL
    }

    /// The rule as lines for `devices.allow` / `devices.deny`. Type "a" with
    /// any restriction is written as one "b" and one "c" line, because the
    /// kernel reads "a" as "every device, every access".
    pub fn v1_lines(&self) -> Vec<String> {
        if self.matches_everything() {
            return vec!["a".to_string()];
        }
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let kinds: &[char] = match self.kind {
            DeviceKind::All => &['b', 'c'],
            DeviceKind::Block => &['b'],
            DeviceKind::Char => &['c'],
        };
        kinds
            .iter()
            .map(|k| {
                format!(
                    "{k} {}:{} {}",
                    num(self.major),
                    num(self.minor),
                    access_string(self.access)
                )
            })
            .collect()
    }
}

/// Devices every container may use, appended after the spec's rules like
/// runc and crun do: mknod of any node (the nodes that exist are decided by
/// linux.devices), and /dev/null, zero, full, random, urandom, tty, ptmx and
/// the pty slaves.
pub fn default_allowed_devices() -> Vec<DeviceRule> {
    vec![
        DeviceRule {
            allow: true,
            kind: DeviceKind::Char,
            major: None,
            minor: None,
            access: ACC_MKNOD,
        },
        DeviceRule {
            allow: true,
            kind: DeviceKind::Block,
            major: None,
            minor: None,
            access: ACC_MKNOD,
        },
        DeviceRule::chr(1, Some(3), ACC_ALL),
        DeviceRule::chr(1, Some(5), ACC_ALL),
        DeviceRule::chr(1, Some(7), ACC_ALL),
        DeviceRule::chr(1, Some(8), ACC_ALL),
        DeviceRule::chr(1, Some(9), ACC_ALL),
        DeviceRule::chr(5, Some(0), ACC_ALL),
        DeviceRule::chr(5, Some(2), ACC_ALL),
        DeviceRule::chr(136, None, ACC_ALL),
    ]
}

/// Normalise the spec's rules; FIFO rules are dropped with a warning.
pub fn rules_from_spec(
    spec: &[LinuxDeviceCgroup],
    warnings: &mut Vec<String>,
) -> Result<Vec<DeviceRule>, CgroupError> {
    let mut out = Vec::with_capacity(spec.len());
    for (i, r) in spec.iter().enumerate() {
        match DeviceRule::from_spec(i, r)? {
            Some(rule) => out.push(rule),
            None => warnings.push(format!(
                "linux.resources.devices[{i}]: fifo rules have no effect in the device cgroup; ignored"
            )),
        }
    }
    Ok(out)
}

/// The v1 writes: deny everything, then each rule in order.
pub fn v1_writes(rules: &[DeviceRule]) -> Vec<(&'static str, String)> {
    let mut out = vec![("devices.deny", "a".to_string())];
    for r in rules {
        let file = if r.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        out.extend(r.v1_lines().into_iter().map(|l| (file, l)));
    }
    out
}

// A tiny eBPF assembler: the handful of instructions the program needs.
mod asm {
    use berth_sys::bpf::Insn;

    pub const R0: u8 = 0;
    pub const R1: u8 = 1;
    pub const R2: u8 = 2;
    pub const R3: u8 = 3;
    pub const R4: u8 = 4;
    pub const R5: u8 = 5;

    // class | size/op | mode/source
    pub const LDX_W: u8 = 0x01 | 0x60; // BPF_LDX | BPF_W (0) | BPF_MEM
    pub const AND32_K: u8 = 0x04 | 0x50; // BPF_ALU | BPF_AND | BPF_K
    pub const RSH32_K: u8 = 0x04 | 0x70; // BPF_ALU | BPF_RSH | BPF_K
    pub const MOV32_X: u8 = 0x04 | 0xb0 | 0x08; // BPF_ALU | BPF_MOV | BPF_X
    pub const MOV64_K: u8 = 0x07 | 0xb0; // BPF_ALU64 | BPF_MOV | BPF_K
    pub const JNE_K: u8 = 0x05 | 0x50; // BPF_JMP | BPF_JNE | BPF_K
    pub const JNE_X: u8 = 0x05 | 0x50 | 0x08; // BPF_JMP | BPF_JNE | BPF_X
    pub const JEQ_K: u8 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
    pub const EXIT: u8 = 0x05 | 0x90; // BPF_JMP | BPF_EXIT

    /// dst = *(u32 *)(src + off)
    pub const fn load_u32(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(LDX_W, dst, src, off, 0)
    }
    pub const fn and32(dst: u8, imm: i32) -> Insn {
        Insn::new(AND32_K, dst, 0, 0, imm)
    }
    pub const fn rsh32(dst: u8, imm: i32) -> Insn {
        Insn::new(RSH32_K, dst, 0, 0, imm)
    }
    pub const fn mov32_reg(dst: u8, src: u8) -> Insn {
        Insn::new(MOV32_X, dst, src, 0, 0)
    }
    pub const fn mov64(dst: u8, imm: i32) -> Insn {
        Insn::new(MOV64_K, dst, 0, 0, imm)
    }
    /// if dst != imm goto +off (offset patched later)
    pub const fn jne(dst: u8, imm: i32) -> Insn {
        Insn::new(JNE_K, dst, 0, 0, imm)
    }
    /// if dst == imm goto +off (offset patched later)
    pub const fn jeq(dst: u8, imm: i32) -> Insn {
        Insn::new(JEQ_K, dst, 0, 0, imm)
    }
    /// if dst != src goto +off (offset patched later)
    pub const fn jne_reg(dst: u8, src: u8) -> Insn {
        Insn::new(JNE_X, dst, src, 0, 0)
    }
    pub const fn exit() -> Insn {
        Insn::new(EXIT, 0, 0, 0, 0)
    }
}

/// The device program for `rules` (default deny, last match wins).
///
/// Register use, from `struct bpf_cgroup_dev_ctx` in r1:
/// r2 = device type (low 16 bits of access_type), r3 = requested access
/// (high 16 bits), r4 = major, r5 = minor. The rules are emitted last to
/// first, each as a block of "skip to the next block unless this field
/// matches" jumps ending in `r0 = allow; exit`, so the first block that
/// matches is the last matching rule. An allow rule matches when it grants
/// every requested access bit, a deny rule when it covers any of them (so
/// "deny w" stops an open for read+write, as on cgroup v1). A rule that
/// matches everything ends the program: rules before it can never decide.
pub fn bpf_program(rules: &[DeviceRule]) -> Vec<Insn> {
    use asm::*;
    let mut prog = vec![
        load_u32(R2, R1, 0),
        and32(R2, 0xffff),
        load_u32(R3, R1, 0),
        rsh32(R3, 16),
        load_u32(R4, R1, 4),
        load_u32(R5, R1, 8),
    ];
    for rule in rules.iter().rev() {
        let mut block = Vec::new();
        let mut jumps = Vec::new();
        if rule.kind != DeviceKind::All {
            jumps.push(block.len());
            block.push(jne(R2, rule.kind.bpf_type()));
        }
        if rule.access != ACC_ALL {
            block.push(mov32_reg(R1, R3));
            block.push(and32(R1, i32::from(rule.access)));
            jumps.push(block.len());
            if rule.allow {
                // An allow rule decides only if it grants every requested bit.
                block.push(jne_reg(R1, R3));
            } else {
                // A deny rule decides as soon as it covers one requested bit.
                block.push(jeq(R1, 0));
            }
        }
        if let Some(major) = rule.major {
            jumps.push(block.len());
            // from_spec keeps numbers within i32.
            block.push(jne(R4, major as i32));
        }
        if let Some(minor) = rule.minor {
            jumps.push(block.len());
            block.push(jne(R5, minor as i32));
        }
        block.push(mov64(R0, i32::from(rule.allow)));
        block.push(exit());
        let len = block.len();
        for &j in &jumps {
            // Blocks are at most 8 instructions long.
            block[j].off = (len - j - 1) as i16;
        }
        prog.extend(block);
        if jumps.is_empty() {
            return prog;
        }
    }
    prog.push(mov64(R0, 0));
    prog.push(exit());
    prog
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    /// Run a device program the way the kernel would, for the opcodes
    /// bpf_program emits. Returns r0.
    pub fn run(prog: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = prog[pc];
            let (d, s) = (i.dst() as usize, i.src() as usize);
            pc += 1;
            match i.code {
                asm::LDX_W => {
                    assert_eq!(s, 1, "loads only from the context");
                    r[d] = u64::from(ctx[(i.off / 4) as usize]);
                }
                asm::AND32_K => r[d] = u64::from((r[d] as u32) & (i.imm as u32)),
                asm::RSH32_K => r[d] = u64::from((r[d] as u32) >> i.imm),
                asm::MOV32_X => r[d] = u64::from(r[s] as u32),
                asm::MOV64_K => r[d] = i.imm as i64 as u64,
                asm::JNE_K => {
                    if r[d] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                asm::JEQ_K => {
                    if r[d] == i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                asm::JNE_X => {
                    if r[d] != r[s] {
                        pc += i.off as usize;
                    }
                }
                asm::EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
        panic!("program did not exit");
    }

    const B: u32 = 1;
    const C: u32 = 2;

    fn spec(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().expect("rule")
    }

    fn docker_like() -> Vec<DeviceRule> {
        let spec = vec![
            spec(false, LinuxDeviceType::A, None, None, "rwm"),
            spec(true, LinuxDeviceType::C, Some(1), Some(3), "rwm"),
            spec(true, LinuxDeviceType::C, Some(136), None, "rw"),
            spec(true, LinuxDeviceType::B, Some(8), Some(0), "r"),
            spec(false, LinuxDeviceType::C, Some(1), Some(3), "w"),
        ];
        let mut w = Vec::new();
        rules_from_spec(&spec, &mut w).expect("valid")
    }

    #[test]
    fn v1_lines() {
        let rules = docker_like();
        assert_eq!(
            v1_writes(&rules),
            vec![
                ("devices.deny", "a".to_string()),
                ("devices.deny", "a".to_string()),
                ("devices.allow", "c 1:3 rwm".to_string()),
                ("devices.allow", "c 136:* rw".to_string()),
                ("devices.allow", "b 8:0 r".to_string()),
                ("devices.deny", "c 1:3 w".to_string()),
            ]
        );
        let partial_all = DeviceRule {
            allow: true,
            kind: DeviceKind::All,
            major: Some(7),
            minor: None,
            access: ACC_READ | ACC_MKNOD,
        };
        assert_eq!(partial_all.v1_lines(), ["b 7:* rm", "c 7:* rm"]);
    }

    #[test]
    fn program_last_match_wins() {
        let prog = bpf_program(&docker_like());
        let (r, w, m) = (
            u32::from(ACC_READ),
            u32::from(ACC_WRITE),
            u32::from(ACC_MKNOD),
        );
        // /dev/null: read ok, write denied by the last rule, mknod ok.
        assert_eq!(run(&prog, C, r, 1, 3), 1);
        assert_eq!(run(&prog, C, w, 1, 3), 0);
        assert_eq!(run(&prog, C, r | w, 1, 3), 0);
        assert_eq!(run(&prog, C, r | m, 1, 3), 1);
        assert_eq!(run(&prog, C, m, 1, 3), 1);
        // /dev/zero: nothing allows it.
        assert_eq!(run(&prog, C, r, 1, 5), 0);
        // pts: rw but not mknod.
        assert_eq!(run(&prog, C, r | w, 136, 4), 1);
        assert_eq!(run(&prog, C, m, 136, 4), 0);
        // sda: read only, and only as a block device.
        assert_eq!(run(&prog, B, r, 8, 0), 1);
        assert_eq!(run(&prog, B, w, 8, 0), 0);
        assert_eq!(run(&prog, C, r, 8, 0), 0);
        // The leading deny-all is the end of the program.
        assert_eq!(prog.last().map(|i| i.code), Some(asm::EXIT));
        assert_eq!(prog[prog.len() - 2], asm::mov64(asm::R0, 0));
    }

    #[test]
    fn allow_all_short_circuits() {
        let all = DeviceRule {
            allow: true,
            kind: DeviceKind::All,
            major: None,
            minor: None,
            access: ACC_ALL,
        };
        let deny_zero = DeviceRule::chr(1, Some(5), ACC_ALL);
        let deny_zero = DeviceRule {
            allow: false,
            ..deny_zero
        };
        let prog = bpf_program(&[deny_zero, all]);
        // prologue + "r0 = 1; exit"
        assert_eq!(prog.len(), 8);
        assert_eq!(run(&prog, C, 2, 1, 5), 1);
        let prog = bpf_program(&[all, deny_zero]);
        assert_eq!(run(&prog, C, 2, 1, 5), 0);
        assert_eq!(run(&prog, B, 4, 8, 1), 1);
        // No rules: everything denied.
        assert_eq!(run(&bpf_program(&[]), C, 2, 1, 3), 0);
    }

    #[test]
    fn defaults_allow_the_basic_devices() {
        let mut rules = vec![DeviceRule {
            allow: false,
            kind: DeviceKind::All,
            major: None,
            minor: None,
            access: ACC_ALL,
        }];
        rules.extend(default_allowed_devices());
        let prog = bpf_program(&rules);
        for (maj, min) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (136, 0),
        ] {
            assert_eq!(run(&prog, C, 6, maj, min), 1, "{maj}:{min}");
        }
        assert_eq!(run(&prog, C, 6, 10, 200), 0);
        assert_eq!(run(&prog, B, 1, 8, 0), 1, "mknod of a block device");
        assert_eq!(run(&prog, B, 2, 8, 0), 0, "reading a block device");
    }

    #[test]
    fn bad_rules_are_invalid_input() {
        let mut w = Vec::new();
        let e = rules_from_spec(
            &[spec(true, LinuxDeviceType::C, Some(1), Some(3), "rwx")],
            &mut w,
        )
        .expect_err("x");
        assert!(e.is_invalid_input());
        assert!(
            e.to_string().contains("linux.resources.devices[0].access"),
            "{e}"
        );
        let e = rules_from_spec(
            &[spec(true, LinuxDeviceType::C, Some(-5), None, "r")],
            &mut w,
        )
        .expect_err("major");
        assert!(e.to_string().contains("devices[0].major"), "{e}");
        let r = rules_from_spec(&[spec(true, LinuxDeviceType::P, None, None, "r")], &mut w)
            .expect("fifo");
        assert!(r.is_empty());
        assert_eq!(w.len(), 1);
        let r = rules_from_spec(
            &[spec(true, LinuxDeviceType::U, Some(4), Some(-1), "")],
            &mut w,
        )
        .expect("u");
        assert_eq!(r[0], DeviceRule::chr(4, None, ACC_ALL));
    }
}
