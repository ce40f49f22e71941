//! `berth-runtime`: berth's OCI runtime with runc's command line.

fn main() {
    std::process::exit(berth::runtime_cli::main(
        "berth-runtime",
        std::env::args_os(),
    ));
}
