//! A few lines of help for assembling eBPF programs: forward jumps to
//! labels, patched when the program is done, and the calls the network
//! programs make. The instruction encodings are `berth_sys::bpf::asm`'s.

use berth_sys::bpf::{asm, Insn};

/// A place in the program, once [`Builder::here`] has put it.
#[derive(Debug, Clone, Copy)]
pub struct Label(usize);

pub struct Builder {
    insns: Vec<Insn>,
    fixups: Vec<(usize, Label)>,
    labels: Vec<Option<usize>>,
}

// Helper ids (`enum bpf_func_id`).
pub const MAP_LOOKUP_ELEM: i32 = 1;
pub const MAP_UPDATE_ELEM: i32 = 2;

impl Builder {
    pub fn new() -> Builder {
        Builder {
            insns: Vec::new(),
            fixups: Vec::new(),
            labels: Vec::new(),
        }
    }
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    pub fn push(&mut self, insns: &[Insn]) {
        self.insns.extend_from_slice(insns);
    }
    /// A jump instruction whose offset goes to `to`.
    pub fn jump(&mut self, insn: Insn, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.insns.push(insn);
    }
    pub fn here(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }
    /// r0 = bpf_map_lookup_elem(map, fp + key); on to `miss` when absent.
    pub fn lookup(&mut self, map: i32, key: i32, miss: Label) {
        self.push(&asm::load_map_fd(1, map));
        self.push(&[
            asm::mov64_reg(2, asm::FP),
            asm::add64(2, key),
            asm::call(MAP_LOOKUP_ELEM),
        ]);
        self.jump(asm::jump_imm(asm::JEQ, 0, 0, 0), miss);
    }
    /// The program, every jump landing on its label.
    pub fn finish(mut self) -> Vec<Insn> {
        for (at, l) in self.fixups {
            let target = self.labels[l.0].expect("label placed");
            // The programs here are a few dozen instructions long.
            self.insns[at].off = (target as i64 - at as i64 - 1) as i16;
        }
        self.insns
    }
}

/// Every jump of `prog` lands inside it, forward.
#[cfg(test)]
pub fn jumps_land_inside(prog: &[Insn]) -> bool {
    prog.iter().enumerate().all(|(i, insn)| {
        let is_jump = insn.code & 0x07 == 0x05 && insn.code != 0x85 && insn.code != 0x95;
        let to = i as i64 + 1 + i64::from(insn.off);
        !is_jump || (to > i as i64 && (to as usize) < prog.len())
    }) && prog.last().is_some_and(|l| l.code == 0x95)
}
