//! The message channel between the runtime and a process it is setting up
//! inside a container: a stream socket pair, framed as one tag byte, a
//! 4-byte length and a payload; descriptors ride along with SCM_RIGHTS.

use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// runtime → init: ids are mapped and the cgroup is joined; go on.
    Go = b'G',
    /// runtime → init: the process is in its cgroup.
    CgroupDone = b'C',
    /// init → runtime: mounts are done; run prestart/createRuntime hooks.
    Hooks = b'H',
    /// runtime → init: hooks done.
    HooksDone = b'h',
    /// init → runtime: set up, waiting for start (or about to exec).
    Ready = b'R',
    /// init → runtime: failed, payload is the message.
    Error = b'E',
    /// init → runtime: the seccomp notify fd (SCM_RIGHTS).
    SeccompFd = b'N',
    /// intermediate → runtime: the pid of the container process.
    Pid = b'P',
}

impl Tag {
    fn from_u8(b: u8) -> Option<Tag> {
        Some(match b {
            b'G' => Tag::Go,
            b'C' => Tag::CgroupDone,
            b'H' => Tag::Hooks,
            b'h' => Tag::HooksDone,
            b'R' => Tag::Ready,
            b'E' => Tag::Error,
            b'N' => Tag::SeccompFd,
            b'P' => Tag::Pid,
            _ => return None,
        })
    }
}

/// One received message: its tag, payload and the descriptor sent with it.
pub type Message = (Tag, Vec<u8>, Option<OwnedFd>);

pub struct Channel {
    pub sock: UnixStream,
}

fn broken(e: impl std::fmt::Display) -> Error {
    Error::Init(format!("sync channel: {e}"))
}

impl Channel {
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = UnixStream::pair().map_err(broken)?;
        Ok((Channel { sock: a }, Channel { sock: b }))
    }

    pub fn send(&mut self, tag: Tag, payload: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(5 + payload.len());
        buf.push(tag as u8);
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(payload);
        self.sock.write_all(&buf).map_err(broken)
    }

    /// Receive one message; Ok(None) on end of stream.
    pub fn recv(&mut self) -> Result<Option<(Tag, Vec<u8>)>> {
        Ok(self.recv_any()?.map(|(t, p, _)| (t, p)))
    }

    /// Receive one message and the descriptor that came with it, if any.
    pub fn recv_any(&mut self) -> Result<Option<Message>> {
        let mut head = [0u8; 5];
        let (n, fd) = loop {
            match berth_sys::fd::recv_with_fd(self.sock.as_fd(), &mut head) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.map_err(broken)?,
            }
        };
        if n == 0 {
            return Ok(None);
        }
        if n < head.len() {
            self.sock.read_exact(&mut head[n..]).map_err(broken)?;
        }
        let tag = Tag::from_u8(head[0]).ok_or_else(|| broken(format!("bad tag {}", head[0])))?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > 1 << 20 {
            return Err(broken("message too long"));
        }
        let mut payload = vec![0u8; len];
        self.sock.read_exact(&mut payload).map_err(broken)?;
        Ok(Some((tag, payload, fd)))
    }

    /// Expect exactly `want`; an Error message becomes Err.
    pub fn expect(&mut self, want: Tag) -> Result<Vec<u8>> {
        match self.recv()? {
            Some((t, p)) if t == want => Ok(p),
            Some((Tag::Error, p)) => Err(Error::Init(String::from_utf8_lossy(&p).into_owned())),
            Some((t, _)) => Err(broken(format!("unexpected message {t:?}"))),
            None => Err(broken("closed early")),
        }
    }

    pub fn send_fd(&mut self, tag: Tag, fd: BorrowedFd<'_>) -> Result<()> {
        berth_sys::fd::send_with_fd(self.sock.as_fd(), &[tag as u8, 0, 0, 0, 0], fd).map_err(broken)
    }
}
