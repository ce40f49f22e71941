//! Logging set-up for the binaries: `tracing` events to stderr or to a
//! log file, as text or as runc-style JSON lines.

use std::path::Path;
use std::sync::Mutex;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber. `json` writes one
/// `{"level":…,"msg":…,"time":…}` object per line, as runc does, so that
/// engines reading the runtime's log (conmon, containerd) understand it.
pub fn init(log: Option<&Path>, json: bool, debug: bool) -> anyhow::Result<()> {
    let level = if debug { "debug" } else { "warn" };
    let filter = EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .without_time();
    match (log, json) {
        (Some(path), json) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("log file {}: {e}", path.display()))?;
            let writer = Mutex::new(file);
            if json {
                builder
                    .json()
                    .flatten_event(true)
                    .with_writer(writer)
                    .map_event_format(|f| f.with_current_span(false).with_span_list(false))
                    .try_init()
            } else {
                builder.with_ansi(false).with_writer(writer).try_init()
            }
        }
        (None, _) => builder.with_writer(std::io::stderr).try_init(),
    }
    .map_err(|e| anyhow::anyhow!("logging: {e}"))
}

/// Write a runc-style JSON error line to the log file (engines show it).
pub fn log_error_json(log: &Path, msg: &str) {
    use std::io::Write;
    let line = serde_json::json!({
        "level": "error",
        "msg": msg,
        "time": humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
    });
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "{line}");
    }
}
