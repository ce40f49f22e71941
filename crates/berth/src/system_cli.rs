//! `info`, `system df` and `system prune`: the store as a whole.

use berth_engine::containers::{self as ctr, state, Paths};
use berth_engine::ImageStore;
use std::io::Write;

fn count_states(
    store: &mut ImageStore,
    paths: &Paths,
) -> anyhow::Result<(usize, usize, usize, usize)> {
    let list = ctr::list(store, paths)?;
    let running = list.iter().filter(|c| c.state == state::RUNNING).count();
    let paused = list.iter().filter(|c| c.state == state::PAUSED).count();
    Ok((list.len(), running, paused, list.len() - running - paused))
}

fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    }
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// Total host memory, bytes.
pub fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `info`: what Docker's shows that berth has, as text or through a
/// template over Docker's field names.
pub fn info(store: &mut ImageStore, paths: &Paths, format: Option<&str>) -> anyhow::Result<i32> {
    let (total, running, paused, stopped) = count_states(store, paths)?;
    let images = store.list()?.len();
    let uts = nix::sys::utsname::uname()?;
    let v = serde_json::json!({
        "ID": "",
        "Containers": total,
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": images,
        "Driver": "overlay2",
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version(),
        "KernelVersion": uts.release().to_string_lossy(),
        "OperatingSystem": os_name(),
        "OSType": "linux",
        "Architecture": uts.machine().to_string_lossy(),
        "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "MemTotal": mem_total(),
        "DockerRootDir": paths.root,
        "Name": uts.nodename().to_string_lossy(),
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "DefaultRuntime": "berth",
        "Runtimes": {"berth": {"path": "berth-runtime"}},
        "SecurityOptions": ["name=seccomp,profile=builtin"],
    });
    let mut out = std::io::stdout().lock();
    if let Some(f) = format {
        if f == "json" || f == "{{json .}}" {
            writeln!(out, "{}", serde_json::to_string(&v)?)?;
        } else {
            writeln!(out, "{}", crate::gotmpl::parse(f)?.render(&v)?)?;
        }
        return Ok(0);
    }
    let s = |k: &str| match &v[k] {
        serde_json::Value::String(x) => x.clone(),
        other => other.to_string(),
    };
    write!(
        out,
        "Server:\n Containers: {total}\n  Running: {running}\n  Paused: {paused}\n  Stopped: {stopped}\n Images: {images}\n Server Version: {}\n Storage Driver: overlay2\n Logging Driver: json-file\n Cgroup Driver: cgroupfs\n Cgroup Version: {}\n Runtimes: berth\n Default Runtime: berth\n Security Options:\n  seccomp\n   Profile: builtin\n Kernel Version: {}\n Operating System: {}\n OSType: linux\n Architecture: {}\n CPUs: {}\n Total Memory: {}\n Name: {}\n Docker Root Dir: {}\n",
        s("ServerVersion"),
        s("CgroupVersion"),
        s("KernelVersion"),
        s("OperatingSystem"),
        s("Architecture"),
        s("NCPU"),
        crate::human::size(mem_total()),
        s("Name"),
        paths.root.display(),
    )?;
    Ok(0)
}

/// `system df`: images, containers and volumes: how many, how many in use,
/// their size and what could be reclaimed.
pub fn df(store: &mut ImageStore, paths: &Paths) -> anyhow::Result<i32> {
    let containers = ctr::list(store, paths)?;
    let images = store.list()?;
    let used_images: std::collections::HashSet<String> =
        containers.iter().map(|c| c.image_id.clone()).collect();
    let img_size: u64 = images.iter().map(|i| i.size).sum();
    let img_active = images
        .iter()
        .filter(|i| used_images.contains(&i.id.to_string()))
        .count();
    let img_reclaim: u64 = images
        .iter()
        .filter(|i| !used_images.contains(&i.id.to_string()))
        .map(|i| i.size)
        .sum();
    let ctr_sizes: Vec<(bool, u64)> = containers
        .iter()
        .map(|c| {
            let live = matches!(
                c.state.as_str(),
                state::RUNNING | state::PAUSED | state::RESTARTING
            );
            (
                live,
                crate::containers_cli::tree_size(&paths.container_dir(&c.id).join("upper")),
            )
        })
        .collect();
    let ctr_size: u64 = ctr_sizes.iter().map(|(_, s)| s).sum();
    let ctr_active = ctr_sizes.iter().filter(|(l, _)| *l).count();
    let ctr_reclaim: u64 = ctr_sizes.iter().filter(|(l, _)| !l).map(|(_, s)| s).sum();
    let volumes = store.db.volumes()?;
    let mut vol_size = 0;
    let mut vol_active = 0;
    let mut vol_reclaim = 0;
    for v in &volumes {
        let size = crate::containers_cli::tree_size(&berth_engine::volumes::data_dir(
            store.root(),
            &v.name,
        ));
        vol_size += size;
        if store.db.volume_users(&v.name)?.is_empty() {
            vol_reclaim += size;
        } else {
            vol_active += 1;
        }
    }
    let pct = |r: u64, t: u64| match (r * 100).checked_div(t) {
        None => "0B".to_string(),
        Some(p) => format!("{} ({p}%)", crate::human::size(r)),
    };
    let rows = vec![
        vec![
            "TYPE".into(),
            "TOTAL".into(),
            "ACTIVE".into(),
            "SIZE".into(),
            "RECLAIMABLE".into(),
        ],
        vec![
            "Images".into(),
            images.len().to_string(),
            img_active.to_string(),
            crate::human::size(img_size),
            pct(img_reclaim, img_size),
        ],
        vec![
            "Containers".into(),
            containers.len().to_string(),
            ctr_active.to_string(),
            crate::human::size(ctr_size),
            pct(ctr_reclaim, ctr_size),
        ],
        vec![
            "Local Volumes".into(),
            volumes.len().to_string(),
            vol_active.to_string(),
            crate::human::size(vol_size),
            pct(vol_reclaim, vol_size),
        ],
        vec![
            "Build Cache".into(),
            "0".into(),
            "0".into(),
            "0B".into(),
            "0B".into(),
        ],
    ];
    write!(std::io::stdout().lock(), "{}", crate::human::table(&rows))?;
    Ok(0)
}

/// `system prune`: stopped containers, then dangling (with `all`, unused)
/// images, and with `volumes` unused anonymous volumes.
pub fn prune(
    store: &mut ImageStore,
    paths: &Paths,
    all: bool,
    volumes: bool,
    force: bool,
) -> anyhow::Result<i32> {
    if !force {
        let mut what = vec![
            "all stopped containers",
            "all networks not used by at least one container",
        ];
        if volumes {
            what.push("all anonymous volumes not used by at least one container");
        }
        what.push(if all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        });
        eprint!(
            "WARNING! This will remove:\n  - {}\n\nAre you sure you want to continue? [y/N] ",
            what.join("\n  - ")
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !answer.trim().eq_ignore_ascii_case("y") {
            return Ok(0);
        }
    }
    let mut out = std::io::stdout().lock();
    let removed = ctr::prune(store, paths)?;
    if !removed.is_empty() {
        writeln!(out, "Deleted Containers:")?;
        for id in &removed {
            writeln!(out, "{id}")?;
        }
        writeln!(out)?;
    }
    let nets = berth_engine::networks::prune(store, paths)?;
    if !nets.is_empty() {
        writeln!(out, "Deleted Networks:")?;
        for n in &nets {
            writeln!(out, "{n}")?;
        }
        writeln!(out)?;
    }
    if volumes {
        let gone = berth_engine::volumes::prune(store, false)?;
        if !gone.is_empty() {
            writeln!(out, "Deleted Volumes:")?;
            for n in &gone {
                writeln!(out, "{n}")?;
            }
            writeln!(out)?;
        }
    }
    let (gone, freed) = store.prune(all)?;
    if !gone.is_empty() {
        writeln!(out, "Deleted Images:")?;
        for r in &gone {
            match r {
                berth_engine::Removal::Untagged(t) => writeln!(out, "untagged: {t}")?,
                berth_engine::Removal::Deleted(d) => writeln!(out, "deleted: {d}")?,
            }
        }
        writeln!(out)?;
    }
    writeln!(out, "Total reclaimed space: {}", crate::human::size(freed))?;
    Ok(0)
}
