//! Where the cgroup filesystems are mounted (`/proc/self/mountinfo`) and
//! where this process sits in each hierarchy (`/proc/self/cgroup`). Pure
//! parsing, so that every host layout can be tested from fixture text.

use std::path::{Component, Path, PathBuf};

/// Controllers the kernel can mount on a cgroup v1 hierarchy. Anything else
/// in a v1 mount's super options is a mount option (`rw`, `noprefix`,
/// `clone_children`, `release_agent=…`) or the `name=` of a named hierarchy.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "debug",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// A mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// Controllers on this hierarchy, in the kernel's order ("cpu", "cpuacct").
    pub controllers: Vec<String>,
    /// `name=` of a named hierarchy ("systemd"), if any.
    pub named: Option<String>,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Which cgroup of the hierarchy is at the mount point ("/" normally).
    pub root: PathBuf,
}

impl V1Mount {
    /// "memory", "cpu,cpuacct", "name=systemd": the controllers (and the
    /// name) joined by ','. Matches the second field of `/proc/self/cgroup`.
    pub fn hierarchy_name(&self) -> String {
        let mut parts = self.controllers.clone();
        if let Some(n) = &self.named {
            parts.push(format!("name={n}"));
        }
        parts.join(",")
    }
}

/// The mounted cgroup2 filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Mount {
    pub mount_point: PathBuf,
    pub root: PathBuf,
}

/// All cgroup mounts of this mount namespace, the first mount of each
/// hierarchy only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub v1: Vec<V1Mount>,
    pub unified: Option<V2Mount>,
}

impl Layout {
    /// True when at least one resource controller is on a v1 hierarchy
    /// (a v1 or hybrid host). A v2 host may still mount a named v1
    /// hierarchy such as `name=systemd` for old containers.
    pub fn has_v1_controllers(&self) -> bool {
        self.v1.iter().any(|m| !m.controllers.is_empty())
    }
}

/// Undo the octal escapes (`\040` for a space) of mountinfo paths.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse `/proc/self/mountinfo` text. Lines that are not cgroup mounts, or
/// malformed, are skipped.
pub fn parse_mountinfo(text: &str) -> Layout {
    let mut layout = Layout::default();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let root = PathBuf::from(unescape(pre[3]));
        let mount_point = PathBuf::from(unescape(pre[4]));
        match post[0] {
            "cgroup2" if layout.unified.is_none() => {
                layout.unified = Some(V2Mount { mount_point, root });
            }
            "cgroup" => {
                let mut controllers = Vec::new();
                let mut named = None;
                for opt in post[2].split(',') {
                    if let Some(n) = opt.strip_prefix("name=") {
                        named = Some(n.to_string());
                    } else if V1_CONTROLLERS.contains(&opt) {
                        controllers.push(opt.to_string());
                    }
                }
                if controllers.is_empty() && named.is_none() {
                    continue;
                }
                let m = V1Mount {
                    controllers,
                    named,
                    mount_point,
                    root,
                };
                let name = m.hierarchy_name();
                if !layout.v1.iter().any(|o| o.hierarchy_name() == name) {
                    layout.v1.push(m);
                }
            }
            _ => {}
        }
    }
    layout
}

/// One line of `/proc/self/cgroup`: "4:memory:/user.slice", "0::/init.scope".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroup {
    /// The hierarchy's controllers and name ("cpu,cpuacct", "name=systemd"),
    /// empty for cgroup2.
    pub controllers: String,
    pub path: PathBuf,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let _id = it.next()?;
            let controllers = it.next()?.to_string();
            let path = PathBuf::from(it.next()?);
            Some(ProcCgroup { controllers, path })
        })
        .collect()
}

fn same_set(a: &str, b: &str) -> bool {
    let mut a: Vec<&str> = a.split(',').filter(|s| !s.is_empty()).collect();
    let mut b: Vec<&str> = b.split(',').filter(|s| !s.is_empty()).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// This process's cgroup in the v1 hierarchy `m` ("/" when not listed).
pub fn own_v1_path(own: &[ProcCgroup], m: &V1Mount) -> PathBuf {
    let name = m.hierarchy_name();
    own.iter()
        .find(|p| !p.controllers.is_empty() && same_set(&p.controllers, &name))
        .map(|p| p.path.clone())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// This process's cgroup in the cgroup2 hierarchy ("/" when not listed).
pub fn own_v2_path(own: &[ProcCgroup]) -> PathBuf {
    own.iter()
        .find(|p| p.controllers.is_empty())
        .map(|p| p.path.clone())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `path` without its leading '/' and without "." components.
pub fn relative_components(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// The directory of cgroup `cgroup` (a path from the hierarchy's root) in a
/// hierarchy whose cgroup `mount_root` is mounted at `mount_point`. A cgroup
/// outside the mounted subtree (which should not happen) is taken as
/// relative to the mount point.
pub fn cgroup_dir(mount_point: &Path, mount_root: &Path, cgroup: &Path) -> PathBuf {
    let cgroup = relative_components(cgroup);
    let root = relative_components(mount_root);
    match cgroup.strip_prefix(&root) {
        Ok(rest) => mount_point.join(rest),
        Err(_) => mount_point.join(cgroup),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    /// This machine: v1 controllers each on its own hierarchy (cpu and
    /// cpuacct separate), name=systemd, and cgroup2 at /sys/fs/cgroup/unified.
    pub const HYBRID_MOUNTINFO: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    pub const HYBRID_PROC_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/b34d10cf
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    /// A systemd v2 host.
    pub const V2_MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    pub const V2_PROC_CGROUP: &str = "0::/user.slice/user-1000.slice/session-2.scope\n";

    /// A classic v1 host (Debian 10, CentOS 7 style): cpu and cpuacct
    /// co-mounted, net_cls,net_prio, no cgroup2 with controllers.
    pub const COMOUNT_MOUNTINFO: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:5 - cgroup cgroup rw,xattr,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,net_cls,net_prio
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids
33 25 0:30 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,devices
34 25 0:31 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,freezer
35 25 0:32 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpuset,clone_children
36 25 0:33 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,blkio
37 25 0:34 / /sys/fs/cgroup/hugetlb rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,hugetlb
38 25 0:35 / /sys/fs/cgroup/perf_event rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,perf_event
99 25 0:26 / /mnt/again rw,relatime - cgroup cgroup rw,cpu,cpuacct
";
    pub const COMOUNT_PROC_CGROUP: &str = "\
11:perf_event:/
10:hugetlb:/
9:blkio:/system.slice/sshd.service
8:cpuset:/
7:freezer:/
6:devices:/system.slice/sshd.service
5:pids:/system.slice/sshd.service
4:memory:/system.slice/sshd.service
3:net_cls,net_prio:/
2:cpu,cpuacct:/system.slice/sshd.service
1:name=systemd:/system.slice/sshd.service
";
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn hybrid_layout() {
        let l = parse_mountinfo(HYBRID_MOUNTINFO);
        let names: Vec<String> = l.v1.iter().map(V1Mount::hierarchy_name).collect();
        assert_eq!(
            names,
            [
                "cpu",
                "cpuacct",
                "cpuset",
                "memory",
                "devices",
                "freezer",
                "blkio",
                "pids",
                "name=systemd"
            ]
        );
        assert!(l.has_v1_controllers());
        let u = l.unified.expect("unified");
        assert_eq!(u.mount_point, Path::new("/sys/fs/cgroup/unified"));
        let own = parse_proc_cgroup(HYBRID_PROC_CGROUP);
        let mem = &l.v1[3];
        assert_eq!(own_v1_path(&own, mem), Path::new("/process_api/b34d10cf"));
        assert_eq!(own_v1_path(&own, &l.v1[8]), Path::new("/"));
        assert_eq!(own_v2_path(&own), Path::new("/"));
    }

    #[test]
    fn pure_v2_layout() {
        let l = parse_mountinfo(V2_MOUNTINFO);
        assert!(l.v1.is_empty());
        assert!(!l.has_v1_controllers());
        assert_eq!(
            l.unified.expect("unified").mount_point,
            Path::new("/sys/fs/cgroup")
        );
        let own = parse_proc_cgroup(V2_PROC_CGROUP);
        assert_eq!(
            own_v2_path(&own),
            Path::new("/user.slice/user-1000.slice/session-2.scope")
        );
    }

    #[test]
    fn comounted_layout() {
        let l = parse_mountinfo(COMOUNT_MOUNTINFO);
        let names: Vec<String> = l.v1.iter().map(V1Mount::hierarchy_name).collect();
        // The second mount of cpu,cpuacct is skipped; mount options are not
        // taken for controllers.
        assert_eq!(
            names,
            [
                "name=systemd",
                "cpu,cpuacct",
                "net_cls,net_prio",
                "memory",
                "pids",
                "devices",
                "freezer",
                "cpuset",
                "blkio",
                "hugetlb",
                "perf_event"
            ]
        );
        assert!(l.unified.is_none());
        let own = parse_proc_cgroup(COMOUNT_PROC_CGROUP);
        assert_eq!(
            own_v1_path(&own, &l.v1[1]),
            Path::new("/system.slice/sshd.service")
        );
        assert_eq!(
            own_v1_path(&own, &l.v1[0]),
            Path::new("/system.slice/sshd.service")
        );
        assert_eq!(own_v1_path(&own, &l.v1[2]), Path::new("/"));
    }

    #[test]
    fn escaped_mount_point_and_bind_root() {
        let l = parse_mountinfo(
            "50 1 0:40 /docker/abc /sys/fs/cgroup/my\\040dir rw - cgroup2 cgroup2 rw\n",
        );
        let u = l.unified.expect("unified");
        assert_eq!(u.mount_point, Path::new("/sys/fs/cgroup/my dir"));
        assert_eq!(u.root, Path::new("/docker/abc"));
        assert_eq!(
            cgroup_dir(&u.mount_point, &u.root, Path::new("/docker/abc/sub")),
            Path::new("/sys/fs/cgroup/my dir/sub")
        );
        assert_eq!(
            cgroup_dir(Path::new("/m"), Path::new("/"), Path::new("/a/./b")),
            Path::new("/m/a/b")
        );
    }
}
