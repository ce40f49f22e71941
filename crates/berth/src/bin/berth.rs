//! `berth`: the Docker-compatible container engine's command line.

use berth::images_cli;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "A Docker-compatible container engine",
    disable_help_subcommand = true
)]
struct Cli {
    /// Root of berth's persistent state (images, containers, volumes)
    #[arg(
        long,
        global = true,
        env = "BERTH_ROOT",
        default_value = "/var/lib/berth"
    )]
    root: PathBuf,
    /// Log level: debug, info, warn, error
    #[arg(long = "log-level", global = true, default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List images
    Images(ImagesArgs),
    /// Manage images
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Show the history of an image
    History(HistoryArgs),
    /// Import the contents from a tarball (or a directory) to create a filesystem image
    Import(ImportArgs),
    /// Load images from a tar archive or STDIN
    Load(LoadArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(SaveArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Run the OCI runtime (runc-compatible command line; see `berth runtime --help`)
    Runtime {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Show the berth version information
    Version,
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Display detailed information on one or more images
    Inspect {
        /// Format output using a Go template (or 'json')
        #[arg(short, long)]
        format: Option<String>,
        /// Image names or IDs
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show the history of an image
    History(HistoryArgs),
    /// Import the contents from a tarball (or a directory) to create a filesystem image
    Import(ImportArgs),
    /// Load images from a tar archive or STDIN
    Load(LoadArgs),
    /// Remove one or more images
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(SaveArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove unused images
    Prune {
        /// Remove all unused images, not just dangling ones
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
struct RmiArgs {
    /// Force removal of the image
    #[arg(short, long)]
    force: bool,
    /// Do not delete untagged parents (accepted; berth keeps no parent chains)
    #[arg(long = "no-prune")]
    no_prune: bool,
    /// Images to remove
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args, Debug)]
struct HistoryArgs {
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Print sizes and dates in human readable format (always on)
    #[arg(short = 'H', long, default_value_t = true)]
    human: bool,
    /// Format output using a Go template, 'table', 'table TEMPLATE' or 'json'
    #[arg(long)]
    format: Option<String>,
    /// Image name or ID
    image: String,
}

#[derive(Args, Debug)]
struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    output: Option<String>,
    /// Images to save
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Read from a tar archive file, instead of STDIN
    #[arg(short, long)]
    input: Option<String>,
    /// Suppress the load output
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// Apply a Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, …)
    #[arg(short, long)]
    change: Vec<String>,
    /// Set a commit message for the imported image
    #[arg(short, long)]
    message: Option<String>,
    /// Set the platform (accepted; the image is for this host's platform)
    #[arg(long)]
    platform: Option<String>,
    /// A tarball (plain, gzip or zstd), a directory, or - for stdin
    file: String,
    /// REPOSITORY[:TAG]
    reference: Option<String>,
}

#[derive(Args, Debug)]
struct TagArgs {
    /// SOURCE_IMAGE[:TAG]
    source: String,
    /// TARGET_IMAGE[:TAG]
    target: String,
}

#[derive(Args, Debug)]
struct ImagesArgs {
    /// Show all images (intermediate ones too)
    #[arg(short, long)]
    all: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Filter output based on conditions provided (dangling, reference, label, before, since)
    #[arg(short, long)]
    filter: Vec<String>,
    /// Format output using a Go template, 'table', 'table TEMPLATE' or 'json'
    #[arg(long)]
    format: Option<String>,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
}

const COMMANDS: &[&str] = &[
    "images", "image", "rmi", "tag", "runtime", "version", "help",
];

fn main() {
    // Output piped into `head` ends quietly, as with other command-line tools.
    let _ = berth_sys::process::default_signal(libc::SIGPIPE);
    let args: Vec<OsString> = std::env::args_os().collect();
    // `berth runtime …` hands everything after it to the runtime's own
    // command line untouched (its flags are runc's, not berth's).
    if args.get(1).and_then(|a| a.to_str()) == Some("runtime") {
        let mut rest = vec![OsString::from("berth runtime")];
        rest.extend(args.into_iter().skip(2));
        std::process::exit(berth::runtime_cli::main("berth runtime", rest));
    }
    if let Some(cmd) = args.get(1).and_then(|a| a.to_str()) {
        if !cmd.starts_with('-') && !COMMANDS.contains(&cmd) {
            eprintln!("berth: '{cmd}' is not a berth command.\nSee 'berth --help'");
            std::process::exit(125);
        }
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let level = if cli.log_level == "debug" {
        "debug"
    } else {
        "warn"
    };
    let _ = berth::logging::init(None, false, level == "debug");
    let code = match run(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Version => {
            println!("berth version {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Cmd::Runtime { .. } => unreachable_runtime(),
        Cmd::Images(a)
        | Cmd::Image {
            cmd: ImageCmd::Ls(a),
        } => {
            let _ = a.all;
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            let opts = images_cli::ListOptions {
                quiet: a.quiet,
                no_trunc: a.no_trunc,
                digests: a.digests,
                filters: a.filter,
                format: a.format,
            };
            images_cli::list(&mut store, &opts)
        }
        Cmd::Image {
            cmd: ImageCmd::Inspect { images, format },
        } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            images_cli::inspect(&mut store, &images, format.as_deref())
        }
        Cmd::History(a)
        | Cmd::Image {
            cmd: ImageCmd::History(a),
        } => {
            let _ = a.human;
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            images_cli::history(
                &mut store,
                &a.image,
                a.quiet,
                a.no_trunc,
                a.format.as_deref(),
            )
        }
        Cmd::Save(a)
        | Cmd::Image {
            cmd: ImageCmd::Save(a),
        } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            images_cli::save(&mut store, &a.images, a.output.as_deref())
        }
        Cmd::Load(a)
        | Cmd::Image {
            cmd: ImageCmd::Load(a),
        } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            images_cli::load(&mut store, a.input.as_deref(), a.quiet)
        }
        Cmd::Import(a)
        | Cmd::Image {
            cmd: ImageCmd::Import(a),
        } => {
            let _ = a.platform;
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            images_cli::import(
                &mut store,
                &a.file,
                a.reference.as_deref(),
                &a.change,
                a.message.as_deref(),
            )
        }
        Cmd::Rmi(a)
        | Cmd::Image {
            cmd: ImageCmd::Rm(a),
        } => {
            let _ = a.no_prune;
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            images_cli::remove(&mut store, &a.images, a.force)
        }
        Cmd::Tag(a)
        | Cmd::Image {
            cmd: ImageCmd::Tag(a),
        } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            images_cli::tag(&mut store, &a.source, &a.target)
        }
        Cmd::Image {
            cmd: ImageCmd::Prune { all, force },
        } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            images_cli::prune(&mut store, all, force)
        }
    }
}

/// `runtime` is dispatched before parsing; reaching it here means it was
/// given after global flags (`berth --root x runtime …`), which the
/// runtime's own `--root` replaces.
fn unreachable_runtime() -> anyhow::Result<i32> {
    anyhow::bail!("put `runtime` first: `berth runtime [runtime flags] COMMAND` (the runtime has its own --root)")
}
