//! `berth`: the Docker-compatible container engine's command line.

use std::ffi::OsString;

const USAGE: &str = "Usage: berth [OPTIONS] COMMAND

A Docker-compatible container engine

Commands:
  runtime     Run the OCI runtime (runc-compatible command line)
  version     Show the berth version information

Run 'berth COMMAND --help' for more information on a command.
";

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cmd = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let code = match cmd {
        "runtime" => {
            let mut rest = vec![OsString::from("berth runtime")];
            rest.extend(args.into_iter().skip(2));
            berth::runtime_cli::main("berth runtime", rest)
        }
        "version" | "--version" | "-v" => {
            println!("berth version {}", env!("CARGO_PKG_VERSION"));
            0
        }
        "" | "help" | "--help" | "-h" => {
            print!("{USAGE}");
            0
        }
        other => {
            eprintln!("berth: '{other}' is not a berth command.\nSee 'berth --help'");
            125
        }
    };
    std::process::exit(code);
}
