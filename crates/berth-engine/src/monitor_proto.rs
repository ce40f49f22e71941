//! What the engine and a container's monitor (`berth-monitor`) tell each
//! other: the monitor's arguments, the state file it keeps, and the frames
//! of its attach socket. Pure data and encoding; no I/O policy.
//!
//! The monitor owns the truth about a running container: it writes
//! `state.json` in the container's run directory on every change (atomic
//! rename), and the engine copies that into the database the next time a
//! command looks (or marks the container dead when the monitor is gone).
//!
//! Attach frames, both ways: one byte of kind, four bytes of big-endian
//! length, the payload.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::path::PathBuf;

/// Everything a monitor needs, given as JSON in its one argument.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitorArgs {
    pub id: String,
    /// The OCI bundle (holds config.json).
    pub bundle: PathBuf,
    /// The runtime's state root.
    pub runtime_root: PathBuf,
    /// The container's run directory: state.json, attach.sock.
    pub run_dir: PathBuf,
    /// The json-file log.
    pub log_path: PathBuf,
    /// `max-size` in bytes (0: no rotation) and `max-file`.
    pub log_max_size: u64,
    pub log_max_files: u32,
    pub tty: bool,
    pub open_stdin: bool,
    /// `no`, `on-failure`, `always`, `unless-stopped`, and `on-failure:N`.
    pub restart: String,
    pub max_retries: u32,
    /// Restarts already made (kept across `start`s for the count).
    pub restart_count: i64,
    /// `--rm`: remove the container after its last exit, by running
    /// `remove_command`.
    pub auto_remove: bool,
    pub remove_command: Vec<String>,
    /// The merged rootfs mount, unmounted after the last exit.
    pub rootfs: PathBuf,
    /// Where a `run --rm` client moves the container's directory for the
    /// monitor to delete after the client hangs up.
    pub trash_dir: PathBuf,
    /// The container's cgroup path (as in the spec's `cgroupsPath`), where
    /// the kernel counts OOM kills.
    pub cgroup: String,
    /// The descriptor number of the pre-connected attach client, if any.
    pub attach_fd: Option<i32>,
    /// The descriptor number to report readiness on.
    pub ready_fd: i32,
    /// The store's root when the container has a network of berth's to
    /// undo at its last exit.
    pub net_root: Option<PathBuf>,
    /// Whether the first descriptor that comes with the arguments is the
    /// network namespace to start the container in (the others hold its
    /// published ports).
    #[serde(default)]
    pub netns: bool,
    /// Endpoints to put on their bridges' fast path once the container has
    /// run a while (see `berth_net::fastpath`).
    #[serde(default)]
    pub fast_path: Vec<berth_net::fastpath::Endpoint>,
}

/// What a monitor can do before its arguments come: make the container's
/// cgroup with its limits while the starting command still makes the
/// container. Sent first on the arguments' socket as one line:
/// [`PREPARE_TAG`], the JSON, a newline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prepare {
    pub id: String,
    /// As the spec's `cgroupsPath` will be.
    pub cgroup: String,
    /// As the spec's `linux.resources` will be.
    pub resources: serde_json::Value,
}

/// The first byte of a [`Prepare`] line (the arguments start with `{`).
pub const PREPARE_TAG: u8 = b'P';

impl Prepare {
    /// The line to send.
    pub fn encode(&self) -> Vec<u8> {
        let mut line = vec![PREPARE_TAG];
        line.extend(serde_json::to_vec(self).unwrap_or_default());
        line.push(b'\n');
        line
    }

    /// A complete line at the start of `buf`: the request (`None` when it
    /// does not parse) and the length of the line. `None` while the line
    /// is still incomplete or when `buf` does not start with one.
    pub fn decode(buf: &[u8]) -> Option<(Option<Prepare>, usize)> {
        if buf.first() != Some(&PREPARE_TAG) {
            return None;
        }
        let end = buf.iter().position(|&b| b == b'\n')?;
        Some((serde_json::from_slice(&buf[1..end]).ok(), end + 1))
    }
}

/// `state.json` in the run directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitorState {
    /// `running`, `restarting`, `exited`.
    pub status: String,
    pub pid: i64,
    pub monitor_pid: i64,
    /// The monitor's start time (clock ticks since boot; 0: not known),
    /// which tells it from a later process given the same pid.
    pub monitor_start: u64,
    pub started_at: String,
    pub finished_at: String,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub restart_count: i64,
    /// Set when a restart failed.
    pub error: String,
    /// Set by `stop`/`kill` through the engine (a file of its own, see
    /// [`STOPPED_FILE`]); copied here for inspection.
    pub stopped_by_user: bool,
}

/// The state file's name in the run directory.
pub const STATE_FILE: &str = "state.json";
/// The attach socket's name in the run directory.
pub const ATTACH_SOCKET: &str = "attach.sock";
/// Present when the user stopped the container: no restart follows (for
/// `unless-stopped` and `always` until the next `start`).
pub const STOPPED_FILE: &str = "stopped";
/// Written by `update --restart` while the monitor runs: the restart
/// policy (`name` or `on-failure:N`) to apply from the next exit on.
pub const RESTART_FILE: &str = "restart-policy";

/// The text of [`RESTART_FILE`] for a policy.
pub fn restart_file_text(name: &str, max_retries: u32) -> String {
    if max_retries > 0 {
        format!("{name}:{max_retries}")
    } else {
        name.to_string()
    }
}

/// A restart policy as [`RESTART_FILE`] holds it: `(name, max_retries)`.
pub fn parse_restart_file(text: &str) -> Option<(String, u32)> {
    let t = text.trim();
    match t.split_once(':') {
        Some((name, n)) => Some((name.to_string(), n.parse().ok()?)),
        None if !t.is_empty() => Some((t.to_string(), 0)),
        None => None,
    }
}

/// The attach socket of a run directory as a path short enough for
/// `sockaddr_un` (108 bytes, which a deep run root with a 64-digit ID
/// exceeds): reached through an open descriptor of the directory. Keep the
/// returned file open while the path is used.
pub fn socket_path(run_dir: &std::path::Path) -> io::Result<(std::fs::File, PathBuf)> {
    let dir = std::fs::File::open(run_dir)?;
    let p = PathBuf::from(format!(
        "/proc/self/fd/{}/{ATTACH_SOCKET}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    ));
    Ok((dir, p))
}

/// Connect to a container's attach socket.
pub fn connect(run_dir: &std::path::Path) -> io::Result<std::os::unix::net::UnixStream> {
    let (_dir, p) = socket_path(run_dir)?;
    std::os::unix::net::UnixStream::connect(p)
}

/// A frame's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client → monitor: bytes for the container's stdin.
    Stdin = 0,
    /// Monitor → client: the container's stdout (or its terminal).
    Stdout = 1,
    /// Monitor → client: the container's stderr.
    Stderr = 2,
    /// Client → monitor: close the container's stdin.
    StdinEof = 3,
    /// Client → monitor: terminal size, rows then columns (u16 each).
    Resize = 4,
    /// Client → monitor: send this signal (i32) to the container.
    Signal = 5,
    /// Monitor → client: the container exited: code (i32) and OOM (u8).
    Exit = 6,
    /// Client → monitor: the client removes the container itself after
    /// the exit (`run --rm` in the foreground), unless it goes away first.
    ClaimRemoval = 7,
    /// Client → monitor: stream output (a client that only waits sends
    /// nothing).
    Stream = 8,
    /// Monitor → the client that claimed the removal, after Exit: the
    /// runtime's state and cgroups are gone. The monitor then shuts its
    /// side down and, once the client hangs up, deletes the container's
    /// directory from the trash.
    Cleaned = 9,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Stdin,
            1 => Kind::Stdout,
            2 => Kind::Stderr,
            3 => Kind::StdinEof,
            4 => Kind::Resize,
            5 => Kind::Signal,
            6 => Kind::Exit,
            7 => Kind::ClaimRemoval,
            8 => Kind::Stream,
            9 => Kind::Cleaned,
            _ => return None,
        })
    }
}

/// The largest payload a frame may carry.
pub const MAX_FRAME: usize = 1 << 20;

/// Encode one frame.
pub fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Write one frame.
pub fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    w.write_all(&frame(kind, payload))
}

/// Read one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(Kind, Vec<u8>)>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let kind = Kind::from_u8(head[0])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown frame kind"))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

/// Incremental decoding of frames from a non-blocking stream.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if any; an error for a malformed stream.
    pub fn next_frame(&mut self) -> io::Result<Option<(Kind, Vec<u8>)>> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let kind = Kind::from_u8(self.buf[0])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown frame kind"))?;
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some((kind, payload)))
    }
}

/// The exit frame's payload.
pub fn exit_payload(code: i32, oom: bool) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.push(oom as u8);
    p
}

/// Decode an exit frame's payload.
pub fn parse_exit(p: &[u8]) -> Option<(i32, bool)> {
    if p.len() != 5 {
        return None;
    }
    Some((i32::from_be_bytes([p[0], p[1], p[2], p[3]]), p[4] != 0))
}

/// One line of Docker's json-file log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub log: String,
    pub stream: String,
    pub time: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_file_round_trip() {
        for (name, max) in [("on-failure", 3), ("always", 0), ("no", 0)] {
            let text = restart_file_text(name, max);
            assert_eq!(parse_restart_file(&text), Some((name.to_string(), max)));
        }
        assert_eq!(restart_file_text("on-failure", 3), "on-failure:3");
        assert_eq!(parse_restart_file(" \n"), None);
    }

    #[test]
    fn frames_round_trip_whole_and_in_pieces() {
        let mut bytes = frame(Kind::Stdout, b"hello");
        bytes.extend(frame(Kind::Exit, &exit_payload(137, true)));
        let mut r = &bytes[..];
        let (k, p) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!((k, p.as_slice()), (Kind::Stdout, &b"hello"[..]));
        let (k, p) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(k, Kind::Exit);
        assert_eq!(parse_exit(&p), Some((137, true)));
        assert!(read_frame(&mut r).unwrap().is_none());
        let mut d = Decoder::default();
        for b in &bytes {
            d.push(&[*b]);
        }
        assert_eq!(d.next_frame().unwrap().unwrap().0, Kind::Stdout);
        assert_eq!(d.next_frame().unwrap().unwrap().0, Kind::Exit);
        assert!(d.next_frame().unwrap().is_none());
        let mut bad = Decoder::default();
        bad.push(&[99, 0, 0, 0, 0]);
        assert!(bad.next_frame().is_err());
        let mut big = Decoder::default();
        big.push(&[1, 0xff, 0xff, 0xff, 0xff]);
        assert!(big.next_frame().is_err());
    }
}
