//! OCI hooks: a program run with the container state on stdin.

use crate::error::{Error, Result};
use oci_spec::runtime::Hook;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `hooks` in order, each with `state` (JSON) on stdin; stop at the
/// first failure.
pub fn run_all(hooks: &[Hook], state: &[u8]) -> Result<()> {
    for h in hooks {
        run(h, state)?;
    }
    Ok(())
}

/// Run `hooks` in order; failures are logged as warnings and do not stop
/// the others (poststart, poststop).
pub fn run_all_warn(hooks: &[Hook], state: &[u8]) {
    for h in hooks {
        if let Err(e) = run(h, state) {
            tracing::warn!("{e}");
        }
    }
}

fn fail(h: &Hook, msg: impl Into<String>) -> Error {
    Error::Hook {
        path: h.path().display().to_string(),
        msg: msg.into(),
    }
}

/// Run one hook: args[0] is argv[0], env replaces the environment, a
/// timeout (seconds) kills it when exceeded.
pub fn run(h: &Hook, state: &[u8]) -> Result<()> {
    let mut cmd = Command::new(h.path());
    if let Some(args) = h.args() {
        if let Some((first, rest)) = args.split_first() {
            cmd.arg0(first);
            cmd.args(rest);
        }
    }
    cmd.env_clear();
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(h, e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state);
    }
    let deadline = match h.timeout() {
        Some(t) if t <= 0 => return Err(fail(h, format!("timeout {t} must be positive"))),
        Some(t) => Some(Instant::now() + Duration::from_secs(t as u64)),
        None => None,
    };
    let mut sleep = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(fail(h, format!("failed: {status}"))),
            Ok(None) => {}
            Err(e) => return Err(fail(h, e.to_string())),
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(
                    h,
                    format!("timed out after {}s", h.timeout().unwrap_or_default()),
                ));
            }
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;

    #[test]
    fn stdin_args_env_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".to_string(),
                "-c".to_string(),
                format!(
                    "cat > {}; echo \"$FOO\" >> {}",
                    out.display(),
                    out.display()
                ),
            ])
            .env(vec!["FOO=bar".to_string()])
            .build()
            .unwrap();
        run(&h, b"{\"id\":\"x\"}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"x\"}bar\n"
        );

        let slow = HookBuilder::default()
            .path("/bin/sleep")
            .args(vec!["sleep".to_string(), "5".to_string()])
            .timeout(1i64)
            .build()
            .unwrap();
        let e = run(&slow, b"").unwrap_err().to_string();
        assert!(e.contains("timed out"), "{e}");

        let bad = HookBuilder::default().path("/bin/false").build().unwrap();
        assert!(run(&bad, b"").is_err());
    }
}
