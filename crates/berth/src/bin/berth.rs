//! `berth`: the Docker-compatible container engine's command line.

use berth::{container_fs_cli, containers_cli, images_cli, registry_cli};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version = concat!("version ", env!("CARGO_PKG_VERSION")),
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
    /// Root of berth's volatile state (running containers); one per --root by default
    #[arg(long = "run-root", global = true, env = "BERTH_RUN_ROOT")]
    run_root: Option<PathBuf>,
    /// Log level: debug, info, warn, error
    #[arg(long = "log-level", global = true, default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum Cmd {
    /// Create and run a new container from an image
    #[command(disable_help_flag = true)]
    Run(Box<containers_cli::RunArgs>),
    /// Create a new container
    #[command(disable_help_flag = true)]
    Create(Box<containers_cli::CreateArgs>),
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// List containers
    Ps(PsArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(NamesArgs),
    /// Return low-level information on berth objects
    Inspect(InspectArgs),
    /// Execute a command in a running container
    Exec(Box<containers_cli::ExecArgs>),
    /// Pause all processes within one or more containers
    Pause(NamesArgs),
    /// Unpause all processes within one or more containers
    Unpause(NamesArgs),
    /// Rename a container
    Rename {
        /// Container
        container: String,
        /// New name
        new_name: String,
    },
    /// Display the running processes of a container
    Top {
        /// Container
        container: String,
        /// ps options (default -ef)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Attach local standard input, output, and error streams to a running container
    Attach(AttachArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(StatsArgs),
    /// Update configuration of one or more containers
    Update(Box<containers_cli::UpdateArgs>),
    /// Display system-wide information
    Info {
        /// Format output using a Go template (or 'json')
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Manage berth
    System {
        #[command(subcommand)]
        cmd: SystemCmd,
    },
    /// Copy files/folders between a container and the local filesystem
    Cp(container_fs_cli::CpArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(container_fs_cli::DiffArgs),
    /// Create a new image from a container's changes
    Commit(container_fs_cli::CommitArgs),
    /// Export a container's filesystem as a tar archive
    Export(container_fs_cli::ExportArgs),
    /// Manage containers
    Container {
        #[command(subcommand)]
        cmd: ContainerCmd,
    },
    /// Manage volumes
    Volume {
        #[command(subcommand)]
        cmd: VolumeCmd,
    },
    /// Manage networks
    Network {
        #[command(subcommand)]
        cmd: berth::networks_cli::NetworkCmd,
    },
    /// List port mappings or a specific mapping for the container
    Port {
        /// Container
        container: String,
        /// PRIVATE_PORT[/PROTO]
        private: Option<String>,
    },
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
    /// Download an image from a registry
    Pull(registry_cli::PullArgs),
    /// Upload an image to a registry
    Push(registry_cli::PushArgs),
    /// Log in to a registry
    Login(registry_cli::LoginArgs),
    /// Log out from a registry
    Logout(registry_cli::LogoutArgs),
    /// Run the OCI runtime (runc-compatible command line; see `berth runtime --help`)
    Runtime {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Show the berth version information
    Version {
        /// Format output using a Go template (or 'json')
        #[arg(short, long)]
        format: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum ContainerCmd {
    /// Create and run a new container from an image
    #[command(disable_help_flag = true)]
    Run(Box<containers_cli::RunArgs>),
    /// Create a new container
    #[command(disable_help_flag = true)]
    Create(Box<containers_cli::CreateArgs>),
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Remove one or more containers
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// List containers
    #[command(alias = "list", alias = "ps")]
    Ls(PsArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(NamesArgs),
    /// Display detailed information on one or more containers
    Inspect(InspectArgs),
    /// Execute a command in a running container
    Exec(Box<containers_cli::ExecArgs>),
    /// Pause all processes within one or more containers
    Pause(NamesArgs),
    /// Unpause all processes within one or more containers
    Unpause(NamesArgs),
    /// Rename a container
    Rename {
        /// Container
        container: String,
        /// New name
        new_name: String,
    },
    /// Display the running processes of a container
    Top {
        /// Container
        container: String,
        /// ps options (default -ef)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Attach local standard input, output, and error streams to a running container
    Attach(AttachArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(container_fs_cli::CpArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(container_fs_cli::DiffArgs),
    /// Create a new image from a container's changes
    Commit(container_fs_cli::CommitArgs),
    /// Export a container's filesystem as a tar archive
    Export(container_fs_cli::ExportArgs),
    /// Remove all stopped containers
    Prune {
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
    /// Display a live stream of container(s) resource usage statistics
    Stats(StatsArgs),
    /// Update configuration of one or more containers
    Update(Box<containers_cli::UpdateArgs>),
}

#[derive(Args, Debug)]
struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short, long)]
    attach: bool,
    /// Attach container's STDIN
    #[arg(short, long)]
    interactive: bool,
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short, long, allow_hyphen_values = true)]
    time: Option<i64>,
    /// Signal to send to the container
    #[arg(short, long)]
    signal: Option<String>,
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
struct KillArgs {
    /// Signal to send to the container
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short, long)]
    volumes: bool,
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum VolumeCmd {
    /// Create a volume
    Create {
        /// Specify volume driver name
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// Set metadata for a volume
        #[arg(long)]
        label: Vec<String>,
        /// Set driver specific options (type, device, o)
        #[arg(short, long = "opt")]
        opt: Vec<String>,
        /// Volume name (random when not given)
        name: Option<String>,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        /// Only display volume names
        #[arg(short, long)]
        quiet: bool,
        /// Provide filter values (dangling, name, label, driver)
        #[arg(short, long)]
        filter: Vec<String>,
        /// Format output using a Go template (or 'json')
        #[arg(long)]
        format: Option<String>,
    },
    /// Display detailed information on one or more volumes
    Inspect {
        /// Format output using a Go template (or 'json')
        #[arg(short, long)]
        format: Option<String>,
        /// Volumes
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm {
        /// Force the removal of one or more volumes (no error for missing ones)
        #[arg(short, long)]
        force: bool,
        /// Volumes
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused local volumes
    Prune {
        /// Remove all unused volumes, not just anonymous ones
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum SystemCmd {
    /// Show berth disk usage
    Df,
    /// Display system-wide information
    Info {
        /// Format output using a Go template (or 'json')
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Remove unused data
    Prune {
        /// Remove all unused images not just dangling ones
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
        /// Prune anonymous volumes
        #[arg(long)]
        volumes: bool,
    },
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Do not truncate output (accepted)
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Format output using a Go template, 'table', 'table TEMPLATE' or 'json'
    #[arg(long)]
    format: Option<String>,
    /// Containers (default: all running)
    containers: Vec<String>,
}

#[derive(Args, Debug)]
struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    /// Proxy all received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    sig_proxy: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// Container
    container: String,
}

#[derive(Args, Debug)]
struct NamesArgs {
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long)]
    last: Option<usize>,
    /// Show the latest created container (includes all states)
    #[arg(short, long)]
    latest: bool,
    /// Display total file sizes
    #[arg(short, long)]
    size: bool,
    /// Filter output based on conditions provided
    #[arg(short, long)]
    filter: Vec<String>,
    /// Format output using a Go template, 'table', 'table TEMPLATE' or 'json'
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args, Debug)]
struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long)]
    tail: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    /// Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m")
    #[arg(long)]
    since: Option<String>,
    /// Show logs before a timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m")
    #[arg(long)]
    until: Option<String>,
    /// Container
    container: String,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// Format output using a Go template (or 'json')
    #[arg(short, long)]
    format: Option<String>,
    /// Only inspect objects of this type (container, image)
    #[arg(long = "type")]
    kind: Option<String>,
    /// Display total file sizes (accepted)
    #[arg(short, long)]
    size: bool,
    /// Names or IDs
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
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
    /// Download an image from a registry
    Pull(registry_cli::PullArgs),
    /// Upload an image to a registry
    Push(registry_cli::PushArgs),
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
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidSubcommand => {
            // Docker's wording for a command it does not have.
            let cmd = match e.get(clap::error::ContextKind::InvalidSubcommand) {
                Some(clap::error::ContextValue::String(c)) => c.clone(),
                _ => String::new(),
            };
            eprintln!("berth: '{cmd}' is not a berth command.\nSee 'berth --help'");
            std::process::exit(125);
        }
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
    let run_root = cli
        .run_root
        .clone()
        .unwrap_or_else(|| containers_cli::default_run_root(&cli.root));
    let paths = || -> anyhow::Result<berth_engine::containers::Paths> {
        let exe = std::env::current_exe()?;
        Ok(berth_engine::containers::Paths {
            root: cli.root.clone(),
            run_root: run_root.clone(),
            monitor: exe.with_file_name("berth-monitor"),
            berth: containers_cli::self_command(&cli.root, &run_root),
        })
    };
    let cmd = match cli.cmd {
        Cmd::Container { cmd } => match cmd {
            ContainerCmd::Run(a) => Cmd::Run(a),
            ContainerCmd::Create(a) => Cmd::Create(a),
            ContainerCmd::Start(a) => Cmd::Start(a),
            ContainerCmd::Stop(a) => Cmd::Stop(a),
            ContainerCmd::Restart(a) => Cmd::Restart(a),
            ContainerCmd::Kill(a) => Cmd::Kill(a),
            ContainerCmd::Rm(a) => Cmd::Rm(a),
            ContainerCmd::Ls(a) => Cmd::Ps(a),
            ContainerCmd::Logs(a) => Cmd::Logs(a),
            ContainerCmd::Wait(a) => Cmd::Wait(a),
            ContainerCmd::Exec(a) => Cmd::Exec(a),
            ContainerCmd::Pause(a) => Cmd::Pause(a),
            ContainerCmd::Unpause(a) => Cmd::Unpause(a),
            ContainerCmd::Rename {
                container,
                new_name,
            } => Cmd::Rename {
                container,
                new_name,
            },
            ContainerCmd::Top { container, ps_args } => Cmd::Top { container, ps_args },
            ContainerCmd::Attach(a) => Cmd::Attach(a),
            ContainerCmd::Stats(a) => Cmd::Stats(a),
            ContainerCmd::Update(a) => Cmd::Update(a),
            ContainerCmd::Cp(a) => Cmd::Cp(a),
            ContainerCmd::Diff(a) => Cmd::Diff(a),
            ContainerCmd::Commit(a) => Cmd::Commit(a),
            ContainerCmd::Export(a) => Cmd::Export(a),
            ContainerCmd::Prune { force } => {
                let mut store = berth_engine::ImageStore::open(&cli.root)?;
                return containers_cli::prune(&mut store, &paths()?, force);
            }
            ContainerCmd::Inspect(mut a) => {
                a.kind = Some("container".into());
                Cmd::Inspect(a)
            }
        },
        other => other,
    };
    match cmd {
        Cmd::Container { .. } => unreachable_container(),
        Cmd::Run(a) => {
            let paths = paths()?;
            // The container's network namespace is made on a thread while
            // the store opens and the container is made; begun before the
            // monitor's process, so that the thread finds the other CPU
            // still idle.
            let netns = match a.create.network.as_deref() {
                Some("host") => None,
                Some(n) if n.starts_with("container:") => None,
                _ => Some(berth_net::netns::Pending::spawn()),
            };
            // The monitor gets ready meanwhile too; a failure here is tried
            // again at start.
            let monitor = berth_engine::containers::prestart_monitor(&paths, !a.detach)
                .ok()
                .map(|m| m.with_netns(netns));
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(containers_cli::run(&mut store, &paths, &a, monitor))
        }
        Cmd::Create(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(containers_cli::create(&mut store, &paths()?, &a))
        }
        Cmd::Start(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(containers_cli::start(
                &mut store,
                &paths()?,
                &a.containers,
                a.attach,
                a.interactive,
            ))
        }
        Cmd::Stop(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            let _ = &a.signal;
            Ok(containers_cli::each(
                &mut store,
                &paths()?,
                &a.containers,
                |s, p, rec| {
                    berth_engine::containers::stop(s, p, rec, a.time)?;
                    Ok(None)
                },
            ))
        }
        Cmd::Restart(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(containers_cli::each(
                &mut store,
                &paths()?,
                &a.containers,
                |s, p, rec| {
                    let rec = berth_engine::containers::stop(s, p, rec, a.time)?;
                    berth_engine::containers::start(s, p, rec, false)?;
                    Ok(None)
                },
            ))
        }
        Cmd::Kill(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            let sig = berth_runtime::signal::parse(&a.signal)
                .map_err(|_| anyhow::anyhow!("invalid signal: {}", a.signal))?;
            Ok(containers_cli::each(
                &mut store,
                &paths()?,
                &a.containers,
                |_, p, rec| {
                    berth_engine::containers::kill(p, &rec, sig)?;
                    Ok(None)
                },
            ))
        }
        Cmd::Rm(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(containers_cli::each(
                &mut store,
                &paths()?,
                &a.containers,
                |s, p, rec| {
                    berth_engine::containers::remove_with_volumes(s, p, rec, a.force, a.volumes)?;
                    Ok(None)
                },
            ))
        }
        Cmd::Volume { cmd } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            volume_cmd(&mut store, cmd)
        }
        Cmd::Network {
            cmd: berth::networks_cli::NetworkCmd::DnsServe { network_id, config },
        } => {
            // The embedded DNS server needs no store.
            let cmd = berth::networks_cli::NetworkCmd::DnsServe { network_id, config };
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            berth::networks_cli::network_cmd(&mut store, &paths()?, cmd)
        }
        Cmd::Network { cmd } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            berth::networks_cli::network_cmd(&mut store, &paths()?, cmd)
        }
        Cmd::Port { container, private } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            berth::networks_cli::port(&mut store, &paths()?, &container, private.as_deref())
        }
        Cmd::Wait(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(containers_cli::each(
                &mut store,
                &paths()?,
                &a.containers,
                |s, p, rec| Ok(Some(containers_cli::wait_one(s, p, rec)?)),
            ))
        }
        Cmd::Ps(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            let last = if a.latest { Some(1) } else { a.last };
            let o = containers_cli::PsOptions {
                all: a.all,
                quiet: a.quiet,
                no_trunc: a.no_trunc,
                last,
                size: a.size,
                filters: &a.filter,
                format: a.format.as_deref(),
            };
            containers_cli::ps(&mut store, &paths()?, &o)
        }
        Cmd::Logs(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            let o = containers_cli::LogOptions {
                follow: a.follow,
                tail: a.tail.as_deref(),
                timestamps: a.timestamps,
                since: a.since.as_deref(),
                until: a.until.as_deref(),
            };
            containers_cli::logs(&mut store, &paths()?, &a.container, &o)
        }
        Cmd::Exec(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(containers_cli::exec(&mut store, &paths()?, &a))
        }
        Cmd::Pause(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(containers_cli::each(
                &mut store,
                &paths()?,
                &a.containers,
                |s, p, rec| {
                    berth_engine::containers::pause(s, p, rec)?;
                    Ok(None)
                },
            ))
        }
        Cmd::Unpause(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(containers_cli::each(
                &mut store,
                &paths()?,
                &a.containers,
                |s, p, rec| {
                    berth_engine::containers::unpause(s, p, rec)?;
                    Ok(None)
                },
            ))
        }
        Cmd::Rename {
            container,
            new_name,
        } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            let p = paths()?;
            let r = berth_engine::containers::find(&mut store, &p, &container)
                .and_then(|rec| berth_engine::containers::rename(&mut store, rec, &new_name));
            Ok(match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("Error response from daemon: {e}");
                    1
                }
            })
        }
        Cmd::Top { container, ps_args } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            containers_cli::top(&mut store, &paths()?, &container, &ps_args)
        }
        Cmd::Info { format }
        | Cmd::System {
            cmd: SystemCmd::Info { format },
        } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            berth::system_cli::info(&mut store, &paths()?, format.as_deref())
        }
        Cmd::System { cmd: SystemCmd::Df } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            berth::system_cli::df(&mut store, &paths()?)
        }
        Cmd::System {
            cmd:
                SystemCmd::Prune {
                    all,
                    force,
                    volumes,
                },
        } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            berth::system_cli::prune(&mut store, &paths()?, all, volumes, force)
        }
        Cmd::Update(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(containers_cli::update(&mut store, &paths()?, &a))
        }
        Cmd::Stats(a) => {
            let _ = a.no_trunc;
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            containers_cli::stats(
                &mut store,
                &paths()?,
                &a.containers,
                a.all,
                !a.no_stream,
                a.format.as_deref(),
            )
        }
        Cmd::Attach(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(containers_cli::attach(
                &mut store,
                &paths()?,
                &a.container,
                a.no_stdin,
                a.sig_proxy,
                a.detach_keys.as_deref(),
            ))
        }
        Cmd::Inspect(a) => {
            let _ = a.size;
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            inspect(&mut store, &paths()?, &a)
        }
        Cmd::Cp(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(container_fs_cli::cp(&mut store, &paths()?, &a))
        }
        Cmd::Diff(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(container_fs_cli::diff(&mut store, &paths()?, &a))
        }
        Cmd::Commit(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(container_fs_cli::commit(&mut store, &paths()?, &a))
        }
        Cmd::Export(a) => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            Ok(container_fs_cli::export(&mut store, &paths()?, &a))
        }
        Cmd::Version { format } => version(format.as_deref()),
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
        Cmd::Pull(a)
        | Cmd::Image {
            cmd: ImageCmd::Pull(a),
        } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            registry_cli::pull(&mut store, &a)
        }
        Cmd::Push(a)
        | Cmd::Image {
            cmd: ImageCmd::Push(a),
        } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            registry_cli::push(&mut store, &a)
        }
        Cmd::Login(a) => registry_cli::login(&a),
        Cmd::Logout(a) => registry_cli::logout(&a),
        Cmd::Image {
            cmd: ImageCmd::Prune { all, force },
        } => {
            let mut store = berth_engine::ImageStore::open(&cli.root)?;
            images_cli::prune(&mut store, all, force)
        }
    }
}

fn kv(list: &[String]) -> std::collections::BTreeMap<String, String> {
    list.iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn volume_cmd(store: &mut berth_engine::ImageStore, cmd: VolumeCmd) -> anyhow::Result<i32> {
    use berth_engine::volumes;
    use std::io::Write;
    let root = store.root().to_path_buf();
    match cmd {
        VolumeCmd::Create {
            driver,
            label,
            opt,
            name,
        } => match volumes::create(store, name.as_deref(), &driver, kv(&label), kv(&opt)) {
            Ok(v) => {
                println!("{}", v.name);
                Ok(0)
            }
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                Ok(1)
            }
        },
        VolumeCmd::Ls {
            quiet,
            filter,
            format,
        } => {
            let mut list = store.db.volumes()?;
            for f in &filter {
                let (k, v) = f.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("bad format of filter (expected name=value): {f}")
                })?;
                match k {
                    "dangling" => {
                        let want = v == "true" || v == "1";
                        let mut keep = Vec::new();
                        for vol in list {
                            if store.db.volume_users(&vol.name)?.is_empty() == want {
                                keep.push(vol);
                            }
                        }
                        list = keep;
                    }
                    "name" => list.retain(|x| x.name.contains(v)),
                    "driver" => list.retain(|x| x.driver == v),
                    "label" => list.retain(|x| match v.split_once('=') {
                        Some((lk, lv)) => x.labels.get(lk).is_some_and(|y| y == lv),
                        None => x.labels.contains_key(v),
                    }),
                    other => anyhow::bail!("invalid filter '{other}'"),
                }
            }
            let mut out = std::io::stdout().lock();
            if quiet {
                for v in &list {
                    writeln!(out, "{}", v.name)?;
                }
                return Ok(0);
            }
            if let Some(f) = format {
                let t = berth::gotmpl::parse(&f)?;
                for v in &list {
                    let labels: Vec<String> =
                        v.labels.iter().map(|(k, x)| format!("{k}={x}")).collect();
                    let value = serde_json::json!({
                        "Name": v.name, "Driver": v.driver, "Scope": "local",
                        "Mountpoint": volumes::data_dir(&root, &v.name), "Labels": labels.join(","),
                    });
                    writeln!(out, "{}", t.render(&value)?)?;
                }
                return Ok(0);
            }
            let mut rows = vec![vec!["DRIVER".to_string(), "VOLUME NAME".to_string()]];
            for v in &list {
                rows.push(vec![v.driver.clone(), v.name.clone()]);
            }
            write!(out, "{}", berth::human::table(&rows))?;
            Ok(0)
        }
        VolumeCmd::Inspect { format, names } => {
            let mut found = Vec::new();
            let mut code = 0;
            for n in &names {
                match volumes::get(store, n) {
                    Ok(v) => found.push(volumes::inspect_json(&root, &v)),
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        code = 1;
                    }
                }
            }
            match format.as_deref() {
                None | Some("json") => println!("{}", serde_json::to_string_pretty(&found)?),
                Some(f) => {
                    let t = berth::gotmpl::parse(f)?;
                    for v in &found {
                        println!("{}", t.render(v)?);
                    }
                }
            }
            Ok(code)
        }
        VolumeCmd::Rm { force, names } => {
            let mut code = 0;
            for n in &names {
                match volumes::remove(store, n) {
                    Ok(()) => println!("{n}"),
                    Err(volumes::VolumeError::NotFound(_)) if force => {}
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        VolumeCmd::Prune { all, force } => {
            if !force {
                eprint!("WARNING! This will remove anonymous local volumes not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !answer.trim().eq_ignore_ascii_case("y") {
                    return Ok(0);
                }
            }
            let removed = volumes::prune(store, all)?;
            if !removed.is_empty() {
                println!("Deleted Volumes:");
                for n in &removed {
                    println!("{n}");
                }
                println!();
            }
            println!("Total reclaimed space: 0B");
            Ok(0)
        }
    }
}

/// `version`: Docker's Client and Server sections (both are this binary:
/// berth has no daemon), or a template over them.
fn version(format: Option<&str>) -> anyhow::Result<i32> {
    let v = env!("CARGO_PKG_VERSION");
    let os_arch = format!(
        "linux/{}",
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }
    );
    let uts = nix::sys::utsname::uname()?;
    let data = serde_json::json!({
        "Client": {"Version": v, "ApiVersion": "1.41", "Os": "linux", "Arch": std::env::consts::ARCH, "Platform": {"Name": "berth"}},
        "Server": {
            "Version": v, "ApiVersion": "1.41", "MinAPIVersion": "1.24", "Os": "linux",
            "Arch": std::env::consts::ARCH, "KernelVersion": uts.release().to_string_lossy(),
            "Components": [{"Name": "Engine", "Version": v}, {"Name": "berth-runtime", "Version": v}],
        },
    });
    match format {
        Some("json") => println!("{}", serde_json::to_string(&data)?),
        Some(f) => println!("{}", berth::gotmpl::parse(f)?.render(&data)?),
        None => print!(
            "Client:\n Version:           {v}\n API version:       1.41\n OS/Arch:           {os_arch}\n\nServer: berth (no daemon: the engine runs in each command)\n Engine:\n  Version:          {v}\n  API version:      1.41 (minimum version 1.24)\n  OS/Arch:          {os_arch}\n  Kernel:           {}\n berth-runtime:\n  Version:          {v} (OCI runtime-spec 1.2)\n",
            uts.release().to_string_lossy()
        ),
    }
    Ok(0)
}

fn unreachable_container() -> anyhow::Result<i32> {
    anyhow::bail!("internal: container subcommand not dispatched")
}

/// `inspect`: containers first, then images, as Docker looks them up.
fn inspect(
    store: &mut berth_engine::ImageStore,
    paths: &berth_engine::containers::Paths,
    a: &InspectArgs,
) -> anyhow::Result<i32> {
    let kind = a.kind.as_deref();
    if kind == Some("image") {
        return images_cli::inspect(store, &a.names, a.format.as_deref());
    }
    let mut out = Vec::new();
    let mut code = 0;
    for n in &a.names {
        match berth_engine::containers::find(store, paths, n) {
            Ok(c) => {
                let mut j = containers_cli::inspect_json(paths, &c);
                berth::networks_cli::add_settings(store, paths, &mut j, &c);
                out.push(j)
            }
            Err(_) if kind != Some("container") => match store.find_stored(n) {
                Ok(_) => {
                    let c =
                        images_cli::inspect(store, std::slice::from_ref(n), a.format.as_deref())?;
                    code = code.max(c);
                }
                Err(_) => match berth_engine::volumes::get(store, n) {
                    Ok(v) if kind.is_none() => {
                        out.push(berth_engine::volumes::inspect_json(store.root(), &v))
                    }
                    _ => {
                        eprintln!("Error: No such object: {n}");
                        code = 1;
                    }
                },
            },
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    if out.is_empty() {
        return Ok(code);
    }
    match a.format.as_deref() {
        None | Some("json") => {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::Value::Array(out))?
            );
        }
        Some(f) => {
            let t = berth::gotmpl::parse(f)?;
            for v in &out {
                println!("{}", t.render(v)?);
            }
        }
    }
    Ok(code)
}

/// `runtime` is dispatched before parsing; reaching it here means it was
/// given after global flags (`berth --root x runtime …`), which the
/// runtime's own `--root` replaces.
fn unreachable_runtime() -> anyhow::Result<i32> {
    anyhow::bail!("put `runtime` first: `berth runtime [runtime flags] COMMAND` (the runtime has its own --root)")
}
