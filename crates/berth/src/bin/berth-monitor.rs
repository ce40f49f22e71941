//! The per-container monitor; see `berth::monitor`.

fn main() {
    std::process::exit(berth::monitor::main());
}
