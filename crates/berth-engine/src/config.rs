//! What a container is asked to be: the `create`/`run` flags resolved into
//! plain data (Docker's `Config` and `HostConfig`, the parts berth
//! implements). Stored with the container (as JSON) so that `start`,
//! `restart` and `inspect` see exactly what `create` was given.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A container's configuration, as the flags gave it (before the image's
/// defaults are merged in, which [`crate::spec`] does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    /// The image as the user named it (`busybox`, `app:1`, an ID).
    pub image: String,
    /// `--entrypoint`: `Some(vec![])` for `--entrypoint ""` (clears the
    /// image's), `Some([prog])` otherwise (Docker takes one word).
    pub entrypoint: Option<Vec<String>>,
    /// The arguments after the image name; empty means "the image's CMD".
    pub cmd: Vec<String>,
    /// `-e`/`--env-file`, each `KEY=VALUE` (a bare `KEY` was resolved from
    /// the caller's environment, or dropped when unset, by the CLI).
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`: `name`, `uid`, `name:group`, `uid:gid`.
    pub user: Option<String>,
    /// `--hostname`; the first 12 hex digits of the ID otherwise.
    pub hostname: Option<String>,
    /// `-l`/`--label`.
    pub labels: BTreeMap<String, String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub open_stdin: bool,
    /// `--read-only`.
    pub read_only: bool,
    /// `--privileged`.
    pub privileged: bool,
    /// `--cap-add`, `--cap-drop`: names with or without `CAP_`, any case,
    /// or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `--security-opt no-new-privileges[=true|false]`.
    pub no_new_privileges: bool,
    /// `--security-opt seccomp=…`.
    pub seccomp: Seccomp,
    /// `--device HOST[:CONTAINER[:PERMISSIONS]]`.
    pub devices: Vec<Device>,
    /// `--tmpfs`, `-v`, `--mount` (volumes already resolved to their
    /// host directories by the engine).
    pub mounts: Vec<Mount>,
    /// Resources.
    pub resources: Resources,
    /// `--ulimit name=soft[:hard]`.
    pub ulimits: Vec<Ulimit>,
    /// `--init`.
    pub init: bool,
    /// `--stop-signal` (a name like `SIGTERM` or `TERM`, or a number).
    pub stop_signal: Option<String>,
    /// `--stop-timeout` in seconds.
    pub stop_timeout: Option<i64>,
    /// `--network`.
    pub network: NetworkMode,
    /// The other network flags (`-p`, `-P`, `--network-alias`, `--ip`,
    /// `--dns`, `--add-host`, …).
    pub net: NetOptions,
    /// `--restart`.
    pub restart: RestartPolicy,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--log-opt key=value` (json-file: `max-size`, `max-file`).
    pub log_opts: BTreeMap<String, String>,
    /// `--volumes-from CONTAINER[:ro|rw]` (resolved into `mounts` at
    /// create; kept for `inspect`).
    pub volumes_from: Vec<String>,
}

/// The seccomp profile a container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "profile")]
pub enum Seccomp {
    /// Docker's default profile.
    #[default]
    Default,
    /// `seccomp=unconfined`.
    Unconfined,
    /// `seccomp=<file>`: the profile's JSON text (Docker's format), read by
    /// the CLI.
    Custom(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub host: PathBuf,
    pub container: PathBuf,
    /// Some of `r`, `w`, `m`.
    pub permissions: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    #[default]
    Bind,
    Volume,
    Tmpfs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mount {
    pub kind: MountKind,
    /// Host path (bind), the volume's data directory (volume); unused for
    /// tmpfs.
    pub source: PathBuf,
    /// The volume's name (volume), for `inspect`.
    pub name: Option<String>,
    /// Absolute path inside the container.
    pub destination: String,
    pub read_only: bool,
    /// `private`, `rprivate` (default), `shared`, `rshared`, `slave`,
    /// `rslave`.
    pub propagation: Option<String>,
    /// tmpfs: `size=…`, `mode=…` and other mount options, as given.
    pub options: Vec<String>,
    /// volume: do not copy the image's content into an empty volume.
    pub no_copy: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// `-m`, bytes.
    pub memory: Option<i64>,
    /// `--memory-swap`, bytes (memory + swap); -1 for unlimited.
    pub memory_swap: Option<i64>,
    /// `--cpus`, in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus`.
    pub cpuset_cpus: Option<String>,
    /// `--pids-limit`; 0 or -1 for unlimited.
    pub pids_limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// Docker's name: `nofile`, `nproc`, `core`, …
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// No network: a network namespace with loopback only.
    None,
    /// The host's network namespace.
    Host,
    /// Docker's default: the `bridge` network.
    #[default]
    Default,
    /// `container:<name|id>`: another container's network namespace.
    Container(String),
    /// A network by name or ID (`bridge` is the default one).
    Network(String),
}

/// The network flags of `create`/`run` besides `--network`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetOptions {
    /// `-p/--publish`, as given (parsed by `berth_net::ports`).
    pub publish: Vec<String>,
    /// `-P/--publish-all`: every EXPOSEd port on a random host port.
    pub publish_all: bool,
    /// `--network-alias`.
    pub aliases: Vec<String>,
    /// `--ip`, `--ip6`.
    pub ip: Option<String>,
    pub ip6: Option<String>,
    /// `--mac-address`.
    pub mac_address: Option<String>,
    /// `--dns`, `--dns-search`, `--dns-option`.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `--add-host host:ip`.
    pub extra_hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    /// `no`, `on-failure`, `always`, `unless-stopped`.
    pub name: String,
    /// `on-failure:N`.
    pub max_retries: u32,
}
