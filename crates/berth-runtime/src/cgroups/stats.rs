//! Resource usage of a container's cgroup, shaped like Docker's stats
//! (`docker stats`, `GET /containers/{id}/stats`): the parsers are pure and
//! take file contents; the readers pick the files of cgroup v1 or v2.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
    pub blkio: BlkioStats,
    /// Per page size ("2MB", "1GB").
    #[serde(default)]
    pub hugetlb: BTreeMap<String, HugetlbStats>,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct CpuStats {
    /// Total CPU time consumed, nanoseconds.
    pub usage_total_ns: u64,
    pub usage_user_ns: u64,
    pub usage_system_ns: u64,
    /// Per CPU, nanoseconds (cgroup v1 only; empty on v2).
    #[serde(default)]
    pub per_cpu_ns: Vec<u64>,
    pub throttling: Throttling,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct Throttling {
    /// Enforcement periods elapsed.
    pub periods: u64,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: u64,
    pub throttled_time_ns: u64,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct MemoryStats {
    /// Memory in use including page cache, bytes.
    pub usage: u64,
    /// Peak usage, when the kernel tracks it.
    pub max_usage: Option<u64>,
    /// `None` = no limit.
    pub limit: Option<u64>,
    /// Page cache (v1 `cache`, v2 `file`).
    pub cache: u64,
    /// Inactive page cache, which `docker stats` leaves out of its usage.
    pub inactive_file: u64,
    /// Swap in use (swap only, not memory+swap).
    pub swap_usage: Option<u64>,
    /// Swap limit (swap only); `None` = none or unknown.
    pub swap_limit: Option<u64>,
    /// Times the limit was hit (v1 `failcnt`, v2 `memory.events` max).
    pub failcnt: u64,
    /// Processes killed by the OOM killer in this cgroup.
    pub oom_kill: u64,
    /// The raw `memory.stat`.
    #[serde(default)]
    pub stat: BTreeMap<String, u64>,
}

impl MemoryStats {
    /// What `docker stats` shows as MEM USAGE: usage minus inactive cache.
    pub fn usage_without_cache(&self) -> u64 {
        self.usage.saturating_sub(self.inactive_file)
    }
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct PidsStats {
    pub current: u64,
    /// `None` = no limit.
    pub limit: Option<u64>,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct BlkioStats {
    /// Bytes per device and operation.
    #[serde(default)]
    pub io_service_bytes: Vec<BlkioEntry>,
    /// Operations per device and operation.
    #[serde(default)]
    pub io_serviced: Vec<BlkioEntry>,
}

/// One row as in Docker's blkio stats: v1 keeps the kernel's operation
/// names ("Read", "Write", "Sync", "Async", "Discard", "Total"); v2 gives
/// "read" and "write", as Docker does.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct HugetlbStats {
    pub usage: u64,
    pub max_usage: Option<u64>,
    pub failcnt: u64,
}

/// cgroup v1 reports "no limit" as the largest page-aligned i64
/// (9223372036854771712); anything this large is taken as unlimited.
const V1_UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_F000;

/// USER_HZ, the unit of `cpuacct.stat` (100 on every architecture Linux
/// exposes to user space except alpha/ia64).
const USER_HZ: u64 = 100;

/// A single value: a number, or "max" (v2) / a huge number (v1) for none.
pub fn parse_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|&v| v < V1_UNLIMITED)
}

pub fn parse_u64(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

/// "key value" lines (memory.stat, cpu.stat, memory.events, …).
pub fn parse_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

fn major_minor(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// v1 `blkio.*io_service_bytes*` / `io_serviced*`: "8:0 Read 4096" lines
/// and a final "Total N".
pub fn parse_blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (major, minor) = major_minor(it.next()?)?;
            let op = it.next()?.to_string();
            let value = it.next()?.parse().ok()?;
            Some(BlkioEntry {
                major,
                minor,
                op,
                value,
            })
        })
        .collect()
}

/// v2 `io.stat`: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0".
pub fn parse_io_stat(text: &str) -> BlkioStats {
    let mut out = BlkioStats::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some((major, minor)) = it.next().and_then(major_minor) else {
            continue;
        };
        let kv: BTreeMap<&str, u64> = it
            .filter_map(|f| {
                let (k, v) = f.split_once('=')?;
                Some((k, v.parse().ok()?))
            })
            .collect();
        let entry = |op: &str, key: &str| BlkioEntry {
            major,
            minor,
            op: op.to_string(),
            value: kv.get(key).copied().unwrap_or(0),
        };
        out.io_service_bytes.push(entry("read", "rbytes"));
        out.io_service_bytes.push(entry("write", "wbytes"));
        out.io_serviced.push(entry("read", "rios"));
        out.io_serviced.push(entry("write", "wios"));
    }
    out
}

/// The hugetlb file name of a page size given in kB
/// (`/sys/kernel/mm/hugepages/hugepages-2048kB` → "2MB").
pub fn page_size_name(kb: u64) -> String {
    if kb >= 1 << 20 && kb & ((1 << 20) - 1) == 0 {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 && kb & ((1 << 10) - 1) == 0 {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    }
}

/// The hugepage sizes of this machine.
pub fn host_page_sizes() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut sizes: Vec<u64> = dir
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            let kb = name
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(kb)
        })
        .collect();
    sizes.sort_unstable();
    sizes.into_iter().map(page_size_name).collect()
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

pub fn cpu_v1(cpuacct: Option<&Path>, cpu: Option<&Path>) -> CpuStats {
    let mut s = CpuStats::default();
    if let Some(d) = cpuacct {
        s.usage_total_ns = read(d, "cpuacct.usage").map_or(0, |t| parse_u64(&t));
        match (read(d, "cpuacct.usage_user"), read(d, "cpuacct.usage_sys")) {
            (Some(u), Some(k)) => {
                s.usage_user_ns = parse_u64(&u);
                s.usage_system_ns = parse_u64(&k);
            }
            _ => {
                let st = read(d, "cpuacct.stat")
                    .map(|t| parse_keyed(&t))
                    .unwrap_or_default();
                let ns = |k: &str| {
                    st.get(k)
                        .copied()
                        .unwrap_or(0)
                        .saturating_mul(1_000_000_000 / USER_HZ)
                };
                s.usage_user_ns = ns("user");
                s.usage_system_ns = ns("system");
            }
        }
        s.per_cpu_ns = read(d, "cpuacct.usage_percpu")
            .map(|t| {
                t.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
    }
    if let Some(d) = cpu {
        let st = read(d, "cpu.stat")
            .map(|t| parse_keyed(&t))
            .unwrap_or_default();
        let g = |k: &str| st.get(k).copied().unwrap_or(0);
        s.throttling = Throttling {
            periods: g("nr_periods"),
            throttled_periods: g("nr_throttled"),
            throttled_time_ns: g("throttled_time"),
        };
    }
    s
}

pub fn cpu_v2(dir: &Path) -> CpuStats {
    let st = read(dir, "cpu.stat")
        .map(|t| parse_keyed(&t))
        .unwrap_or_default();
    let g = |k: &str| st.get(k).copied().unwrap_or(0);
    CpuStats {
        usage_total_ns: g("usage_usec").saturating_mul(1000),
        usage_user_ns: g("user_usec").saturating_mul(1000),
        usage_system_ns: g("system_usec").saturating_mul(1000),
        per_cpu_ns: Vec::new(),
        throttling: Throttling {
            periods: g("nr_periods"),
            throttled_periods: g("nr_throttled"),
            throttled_time_ns: g("throttled_usec").saturating_mul(1000),
        },
    }
}

pub fn memory_v1(dir: &Path) -> MemoryStats {
    let stat = read(dir, "memory.stat")
        .map(|t| parse_keyed(&t))
        .unwrap_or_default();
    let pick = |a: &str, b: &str| stat.get(a).or_else(|| stat.get(b)).copied().unwrap_or(0);
    let usage = read(dir, "memory.usage_in_bytes").map_or(0, |t| parse_u64(&t));
    let limit = read(dir, "memory.limit_in_bytes").and_then(|t| parse_limit(&t));
    let memsw_usage = read(dir, "memory.memsw.usage_in_bytes").map(|t| parse_u64(&t));
    let memsw_limit = read(dir, "memory.memsw.limit_in_bytes").and_then(|t| parse_limit(&t));
    let oom = read(dir, "memory.oom_control")
        .map(|t| parse_keyed(&t))
        .unwrap_or_default();
    MemoryStats {
        usage,
        max_usage: read(dir, "memory.max_usage_in_bytes").map(|t| parse_u64(&t)),
        limit,
        cache: pick("total_cache", "cache"),
        inactive_file: pick("total_inactive_file", "inactive_file"),
        swap_usage: memsw_usage.map(|m| m.saturating_sub(usage)),
        swap_limit: match (memsw_limit, limit) {
            (Some(ms), Some(l)) => Some(ms.saturating_sub(l)),
            _ => None,
        },
        failcnt: read(dir, "memory.failcnt").map_or(0, |t| parse_u64(&t)),
        oom_kill: oom.get("oom_kill").copied().unwrap_or(0),
        stat,
    }
}

pub fn memory_v2(dir: &Path) -> MemoryStats {
    let stat = read(dir, "memory.stat")
        .map(|t| parse_keyed(&t))
        .unwrap_or_default();
    let events = read(dir, "memory.events")
        .map(|t| parse_keyed(&t))
        .unwrap_or_default();
    MemoryStats {
        usage: read(dir, "memory.current").map_or(0, |t| parse_u64(&t)),
        max_usage: read(dir, "memory.peak").map(|t| parse_u64(&t)),
        limit: read(dir, "memory.max").and_then(|t| parse_limit(&t)),
        cache: stat.get("file").copied().unwrap_or(0),
        inactive_file: stat.get("inactive_file").copied().unwrap_or(0),
        swap_usage: read(dir, "memory.swap.current").map(|t| parse_u64(&t)),
        swap_limit: read(dir, "memory.swap.max").and_then(|t| parse_limit(&t)),
        failcnt: events.get("max").copied().unwrap_or(0),
        oom_kill: events.get("oom_kill").copied().unwrap_or(0),
        stat,
    }
}

/// Same files on v1 and v2.
pub fn pids(dir: &Path) -> PidsStats {
    PidsStats {
        current: read(dir, "pids.current").map_or(0, |t| parse_u64(&t)),
        limit: read(dir, "pids.max").and_then(|t| parse_limit(&t)),
    }
}

pub fn blkio_v1(dir: &Path) -> BlkioStats {
    // CFQ, then BFQ, then the throttling layer (which sees every device).
    let first = |files: [&str; 3]| {
        files
            .iter()
            .filter_map(|f| read(dir, f))
            .map(|t| parse_blkio_v1(&t))
            .find(|e| !e.is_empty())
            .unwrap_or_default()
    };
    BlkioStats {
        io_service_bytes: first([
            "blkio.io_service_bytes_recursive",
            "blkio.bfq.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes_recursive",
        ]),
        io_serviced: first([
            "blkio.io_serviced_recursive",
            "blkio.bfq.io_serviced_recursive",
            "blkio.throttle.io_serviced_recursive",
        ]),
    }
}

pub fn io_v2(dir: &Path) -> BlkioStats {
    read(dir, "io.stat")
        .map(|t| parse_io_stat(&t))
        .unwrap_or_default()
}

pub fn hugetlb(dir: &Path, v1: bool, sizes: &[String]) -> BTreeMap<String, HugetlbStats> {
    sizes
        .iter()
        .map(|size| {
            let s = if v1 {
                HugetlbStats {
                    usage: read(dir, &format!("hugetlb.{size}.usage_in_bytes"))
                        .map_or(0, |t| parse_u64(&t)),
                    max_usage: read(dir, &format!("hugetlb.{size}.max_usage_in_bytes"))
                        .map(|t| parse_u64(&t)),
                    failcnt: read(dir, &format!("hugetlb.{size}.failcnt"))
                        .map_or(0, |t| parse_u64(&t)),
                }
            } else {
                let ev = read(dir, &format!("hugetlb.{size}.events"))
                    .map(|t| parse_keyed(&t))
                    .unwrap_or_default();
                HugetlbStats {
                    usage: read(dir, &format!("hugetlb.{size}.current"))
                        .map_or(0, |t| parse_u64(&t)),
                    max_usage: None,
                    failcnt: ev.get("max").copied().unwrap_or(0),
                }
            };
            (size.clone(), s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("67108864\n"), Some(67_108_864));
        assert_eq!(parse_limit("garbage"), None);
    }

    #[test]
    fn blkio_v1_lines() {
        let t = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\nTotal 12288\n";
        let e = parse_blkio_v1(t);
        assert_eq!(e.len(), 6);
        assert_eq!(
            e[1],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Write".into(),
                value: 8192
            }
        );
    }

    #[test]
    fn io_stat_v2() {
        let s = parse_io_stat("259:0 rbytes=1024 wbytes=2048 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(s.io_service_bytes.len(), 2);
        assert_eq!(s.io_service_bytes[0].op, "read");
        assert_eq!(s.io_service_bytes[1].value, 2048);
        assert_eq!(s.io_serviced[1].value, 2);
        assert_eq!(s.io_serviced[0].major, 259);
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1_048_576), "1GB");
        assert_eq!(page_size_name(64), "64KB");
        assert_eq!(page_size_name(32_768), "32MB");
    }

    #[test]
    fn memory_v2_from_files() {
        let d = tempfile::tempdir().expect("tmp");
        let w = |f: &str, t: &str| std::fs::write(d.path().join(f), t).expect("write");
        w("memory.current", "1000000\n");
        w("memory.max", "max\n");
        w(
            "memory.stat",
            "anon 500000\nfile 400000\ninactive_file 300000\n",
        );
        w("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        w("memory.swap.current", "0\n");
        let m = memory_v2(d.path());
        assert_eq!(m.usage, 1_000_000);
        assert_eq!(m.limit, None);
        assert_eq!(m.cache, 400_000);
        assert_eq!(m.usage_without_cache(), 700_000);
        assert_eq!((m.failcnt, m.oom_kill), (3, 1));
        assert_eq!(m.swap_usage, Some(0));
        assert_eq!(m.max_usage, None);
    }

    #[test]
    fn stats_roundtrip_json() {
        let mut s = Stats::default();
        s.memory.limit = Some(5);
        s.hugetlb.insert("2MB".into(), HugetlbStats::default());
        let j = serde_json::to_string(&s).expect("json");
        let back: Stats = serde_json::from_str(&j).expect("parse");
        assert_eq!(back, s);
    }
}
