//! The `berth` command line: argument parsing, output formats and the
//! wiring of the libraries. Both binaries (`berth`, `berth-runtime`) are
//! thin entry points over this crate.

pub mod container_fs_cli;
pub mod containers_cli;
pub mod gotmpl;
pub mod human;
pub mod images_cli;
pub mod logging;
pub mod monitor;
pub mod networks_cli;
pub mod progress;
pub mod registry_cli;
pub mod runtime_cli;
pub mod system_cli;
pub mod wait;
