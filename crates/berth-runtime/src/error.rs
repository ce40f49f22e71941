//! The runtime's error type: every failure names the object it is about.

use std::path::PathBuf;

/// What kind of failure, so that callers can map it to an exit code or an
/// HTTP status without matching on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller gave something invalid (config, id, signal, flag).
    InvalidInput,
    /// The container (or another named object) does not exist.
    NotFound,
    /// The object exists already.
    Conflict,
    /// The container is in a state that does not allow the operation.
    WrongState,
    /// The kernel or the host refused or failed.
    System,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid container id {id:?}: {why}")]
    InvalidId { id: String, why: &'static str },
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("container {id:?} is {state}: {why}")]
    WrongState {
        id: String,
        state: String,
        why: &'static str,
    },
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("config.json: {field}: {msg}")]
    ConfigField { field: String, msg: String },
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("hook {path}: {msg}")]
    Hook { path: String, msg: String },
    #[error("container init failed: {0}")]
    Init(String),
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    /// The shell's exit code for a process that could not be started:
    /// 127 when its program is not found, 126 when it cannot be invoked;
    /// `None` for any other failure.
    pub fn exec_failure_code(&self) -> Option<i32> {
        match self {
            Error::Init(m) if m.contains("not found") => Some(127),
            Error::Init(m) if m.contains("permission denied") => Some(126),
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidId { .. }
            | Error::Config { .. }
            | Error::ConfigField { .. }
            | Error::UnknownSignal(_)
            | Error::Unsupported(_) => ErrorKind::InvalidInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Exists(_) => ErrorKind::Conflict,
            Error::WrongState { .. } => ErrorKind::WrongState,
            Error::Seccomp(e) if e.is_invalid_input() => ErrorKind::InvalidInput,
            Error::Cgroup(e) if e.is_invalid_input() => ErrorKind::InvalidInput,
            _ => ErrorKind::System,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn sys(context: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            context: context.into(),
            source,
        }
    }

    pub fn field(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::ConfigField {
            field: field.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a context string to io/nix results.
pub trait Context<T> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::sys(context(), e))
    }
}
