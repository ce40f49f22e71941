//! Docker's human-readable sizes and durations, as its CLI prints them.

use std::time::Duration;

/// Decimal size with 3 significant digits: `7.41kB`, `4.26MB`, `0B`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", sig3(v), UNITS[i])
}

/// `%.3g` of Go: 3 significant digits, no trailing zeros.
fn sig3(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = v.abs().log10().floor() as i32 + 1;
    let decimals = (3 - digits).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// "2 weeks", "About an hour", "Less than a second" (Go's units.HumanDuration).
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    let hours = secs / 3600;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s / 60 == 1 => "About a minute".into(),
        s if s / 60 < 60 => format!("{} minutes", s / 60),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// "3 days ago" for an RFC 3339 time; empty when it cannot be read.
pub fn ago(rfc3339: &str) -> String {
    match humantime::parse_rfc3339_weak(
        rfc3339
            .trim_end_matches('Z')
            .split('.')
            .next()
            .unwrap_or(""),
    )
    .ok()
    .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
    {
        Some(d) => format!("{} ago", duration(d)),
        None => "N/A".into(),
    }
}

/// Rows padded like Go's tabwriter as Docker's CLI uses it (min width 10,
/// padding 3).
pub fn table(rows: &[Vec<String>]) -> String {
    table_min(rows, 10)
}

/// Rows padded like Go's tabwriter with padding 3 and columns at least
/// `min_width` wide (runc's listings use 12).
pub fn table_min(rows: &[Vec<String>], min_width: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                let w = (widths[i] + 3).max(min_width);
                line.push_str(&" ".repeat(w - c.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(999), "999B");
        assert_eq!(size(7408), "7.41kB");
        assert_eq!(size(4_261_000), "4.26MB");
        assert_eq!(size(72_800_000), "72.8MB");
        assert_eq!(size(1_000_000_000), "1GB");
    }

    #[test]
    fn durations_like_docker() {
        let d = |s| duration(Duration::from_secs(s));
        assert_eq!(d(0), "Less than a second");
        assert_eq!(d(45), "45 seconds");
        assert_eq!(d(90), "About a minute");
        assert_eq!(d(3600 * 5), "5 hours");
        assert_eq!(d(86400 * 3), "3 days");
        assert_eq!(d(86400 * 20), "2 weeks");
        assert_eq!(d(86400 * 100), "3 months");
        assert_eq!(d(86400 * 800), "2 years");
    }
}
