//! Running a container process in the foreground: wait for it, forward the
//! signals the user sends (Ctrl-C, SIGTERM, …), and when it has a terminal
//! that we hold, copy our stdin/stdout to and from it.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGALRM,
];

/// The shell-style exit code of a wait status: the code, or 128 + signal.
pub fn exit_code(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// Block the forwarded signals and SIGCHLD so that they queue for the
/// signalfd; call before the child can exit.
pub fn block() -> anyhow::Result<SigSet> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(set)
}

/// Wait for `pid` to exit, forwarding signals to it. Returns its exit code.
pub fn wait_forwarding(pid: i32, set: &SigSet) -> anyhow::Result<i32> {
    foreground(pid, set, None)
}

/// Puts the terminal back as it was when dropped.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    fn enter(fd: BorrowedFd<'a>) -> Option<RawMode<'a>> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    if let Ok((rows, cols)) = berth_sys::pty::get_winsize(from) {
        let _ = berth_sys::pty::set_winsize(to, rows, cols);
    }
}

fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Wait for `pid`, forwarding signals; with `master`, also relay between
/// our stdio and the container's terminal (stdin in raw mode when it is a
/// terminal itself) until the container side closes.
pub fn foreground(pid: i32, set: &SigSet, master: Option<OwnedFd>) -> anyhow::Result<i32> {
    let sfd = SignalFd::new(set)?;
    let child = Pid::from_raw(pid);
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let _raw = match &master {
        Some(m) => {
            copy_winsize(stdin.as_fd(), m.as_fd());
            RawMode::enter(stdin.as_fd())
        }
        None => None,
    };
    let mut code = None;
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if code.is_none() {
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(ws) => code = exit_code(ws).or(code),
                Err(nix::errno::Errno::ECHILD) => code = Some(0),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(c) = code {
            if !master_open {
                return Ok(c);
            }
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let m_idx = master.as_ref().filter(|_| master_open).map(|m| {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let i_idx = if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            Some(fds.len() - 1)
        } else {
            None
        };
        // Once the process is gone, only drain what the terminal still holds.
        let timeout = if code.is_some() {
            PollTimeout::from(100u8)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(0) => master_open = false,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (sig_ready, m_ready, i_ready) = (ready(Some(0)), ready(m_idx), ready(i_idx));
        drop(fds);
        if sig_ready {
            if let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGWINCH {
                    if let Some(m) = &master {
                        copy_winsize(stdin.as_fd(), m.as_fd());
                    }
                } else if sig != libc::SIGCHLD {
                    if let Ok(s) = Signal::try_from(sig) {
                        let _ = nix::sys::signal::kill(child, s);
                    }
                }
            }
        }
        if let (true, Some(m)) = (m_ready, &master) {
            match nix::unistd::read(m, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => master_open = false,
                Ok(n) => {
                    write_all(stdout.as_fd(), &buf[..n]);
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                Err(_) => master_open = false,
            }
        }
        if let (true, Some(m)) = (i_ready, &master) {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => {
                    stdin_open = false;
                    // End of our input: the terminal's end-of-file character.
                    write_all(m.as_fd(), &[4]);
                }
                Ok(n) => {
                    if !write_all(m.as_fd(), &buf[..n]) {
                        stdin_open = false;
                    }
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
    }
}

/// A console socket held by berth itself, for `run -t`/`exec -t` without
/// `--console-socket`: the container's init sends the pty master here.
pub struct LocalConsole {
    ours: std::os::unix::net::UnixStream,
}

impl LocalConsole {
    /// Returns our end and the end to give to the container process.
    pub fn new() -> anyhow::Result<(LocalConsole, OwnedFd)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((LocalConsole { ours: a }, OwnedFd::from(b)))
    }

    /// The pty master the container process sent.
    pub fn master(&self) -> anyhow::Result<OwnedFd> {
        let mut name = [0u8; 256];
        let (_, fd) = berth_sys::fd::recv_with_fd(self.ours.as_fd(), &mut name)?;
        fd.ok_or_else(|| anyhow::anyhow!("the container sent no terminal"))
    }
}
