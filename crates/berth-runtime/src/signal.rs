//! Signal names and numbers as runc accepts them.

use crate::error::{Error, Result};
use nix::sys::signal::Signal;

/// Parse "TERM", "SIGTERM", "sigterm", "15", "RTMIN+3" into a signal number.
pub fn parse(s: &str) -> Result<i32> {
    let unknown = || Error::UnknownSignal(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=libc::SIGRTMAX()).contains(&n) {
            Ok(n)
        } else {
            Err(unknown())
        };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')
                .and_then(|r| r.parse::<i32>().ok())
                .ok_or_else(unknown)?
        };
        let n = libc::SIGRTMIN() + off;
        return if n <= libc::SIGRTMAX() {
            Ok(n)
        } else {
            Err(unknown())
        };
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let off = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('-')
                .and_then(|r| r.parse::<i32>().ok())
                .ok_or_else(unknown)?
        };
        let n = libc::SIGRTMAX() - off;
        return if n >= libc::SIGRTMIN() {
            Ok(n)
        } else {
            Err(unknown())
        };
    }
    let full = format!("SIG{name}");
    full.parse::<Signal>()
        .map(|s| s as i32)
        .map_err(|_| unknown())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("TERM").unwrap(), 15);
        assert_eq!(parse("SIGKILL").unwrap(), 9);
        assert_eq!(parse("usr1").unwrap(), 10);
        assert_eq!(parse("9").unwrap(), 9);
        assert_eq!(parse("RTMIN+1").unwrap(), libc::SIGRTMIN() + 1);
        for bad in ["SIGFOO", "0", "99", "-1", "", "RTMIN+99"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
