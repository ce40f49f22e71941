//! `diff`, `export`, `commit` and `cp`: a container's file system from the
//! command line, with Docker's flags, output and exit codes (every failure
//! exits 1; the engine's are printed as "Error response from daemon: …",
//! those of host paths as they are, as Docker's CLI does).

use berth_engine::container_fs::{
    self as cfs, CommitOptions, CopyOptions, FsError, HostDest, HostSource,
};
use berth_engine::containers::{self as ctr, Paths};
use berth_engine::ImageStore;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Container
    pub container: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    pub output: Option<String>,
    /// Container
    pub container: String,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// Pause container during commit (--pause=false to not)
    #[arg(
        short,
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub pause: bool,
    /// Container
    pub container: String,
    /// REPOSITORY[:TAG]
    pub reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short, long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress progress output during copy. Progress output is automatically suppressed if no terminal is attached
    #[arg(short, long)]
    pub quiet: bool,
    /// CONTAINER:SRC_PATH, or a local SRC_PATH, or - (a tar on STDIN)
    #[arg(allow_hyphen_values = true)]
    pub source: String,
    /// CONTAINER:DEST_PATH, or a local DEST_PATH, or - (a tar on STDOUT)
    #[arg(allow_hyphen_values = true)]
    pub destination: String,
}

/// Print an error as Docker's CLI does; the exit code (1).
fn report(e: &FsError) -> i32 {
    if e.is_local() {
        eprintln!("{e}");
    } else {
        eprintln!("Error response from daemon: {e}");
    }
    1
}

/// Writing to a pipe whose reader left must fail with EPIPE (and let us
/// unmount what we mounted), not kill us.
fn no_sigpipe() {
    let _ = nix::sys::signal::SigSet::from(nix::sys::signal::Signal::SIGPIPE).thread_block();
}

/// `diff CONTAINER`: `A`, `C` and `D` lines.
pub fn diff(store: &mut ImageStore, paths: &Paths, a: &DiffArgs) -> i32 {
    let r = ctr::find(store, paths, &a.container)
        .map_err(FsError::from)
        .and_then(|rec| cfs::changes(store, paths, &rec));
    let list = match r {
        Ok(l) => l,
        Err(e) => return report(&e),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for c in list {
        let line = write!(out, "{} ", c.kind.letter())
            .and_then(|()| out.write_all(c.path.as_os_str().as_bytes()))
            .and_then(|()| out.write_all(b"\n"));
        if line.is_err() {
            return 1;
        }
    }
    if out.flush().is_err() {
        return 1;
    }
    0
}

/// Docker's `ValidateOutputPath`: the directory of a file to write exists.
fn validate_output_path(path: &str) -> Result<(), FsError> {
    let p = std::path::Path::new(path);
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if let Err(e) = std::fs::metadata(dir) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return Err(FsError::Local(format!(
                "failed to export container: invalid output path: directory {:?} does not exist",
                dir.display().to_string()
            )));
        }
    }
    if let Ok(m) = std::fs::metadata(p) {
        if m.is_dir() {
            return Err(FsError::Local(format!(
                "failed to export container: open {path}: is a directory"
            )));
        }
    }
    Ok(())
}

/// `export [-o FILE] CONTAINER`: a tar of the whole file system, to a file
/// (written aside, renamed into place once complete) or to stdout (not a
/// terminal).
pub fn export(store: &mut ImageStore, paths: &Paths, a: &ExportArgs) -> i32 {
    let output = a.output.as_deref().filter(|o| !o.is_empty());
    if output.is_none() && std::io::stdout().is_terminal() {
        eprintln!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
        return 1;
    }
    if let Some(o) = output {
        if let Err(e) = validate_output_path(o) {
            return report(&e);
        }
    }
    let rec = match ctr::find(store, paths, &a.container) {
        Ok(r) => r,
        Err(e) => return report(&e.into()),
    };
    match output {
        None => {
            no_sigpipe();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            match cfs::export(store, paths, &rec, &mut out) {
                Ok(_) => 0,
                Err(e) if e.is_broken_pipe() => 1,
                Err(e) => report(&e),
            }
        }
        Some(path) => {
            let target = std::path::Path::new(path);
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = target.with_file_name(format!(".{name}.berth-tmp-{}", std::process::id()));
            let f = match std::fs::File::create(&tmp) {
                Ok(f) => f,
                Err(e) => {
                    return report(&FsError::Local(format!("failed to export container: {e}")))
                }
            };
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            let r = cfs::export(store, paths, &rec, &mut w).and_then(|_| {
                let f = w
                    .into_inner()
                    .map_err(|e| FsError::Local(format!("write {path}: {}", e.error())))?;
                f.sync_all()
                    .map_err(|e| FsError::Local(format!("write {path}: {e}")))?;
                std::fs::rename(&tmp, target)
                    .map_err(|e| FsError::Local(format!("rename {path}: {e}")))
            });
            match r {
                Ok(()) => 0,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    report(&e)
                }
            }
        }
    }
}

/// `commit CONTAINER [REPOSITORY[:TAG]]`: prints the new image's ID.
pub fn commit(store: &mut ImageStore, paths: &Paths, a: &CommitArgs) -> i32 {
    let r = (|| -> Result<String, FsError> {
        let reference = match a.reference.as_deref() {
            None => None,
            Some(s) => {
                let r = berth_image::reference::parse(s).map_err(|e| {
                    FsError::Local(format!(
                        "Error parsing reference: {s:?} is not a valid repository/tag: {e}"
                    ))
                })?;
                if r.digest().is_some() {
                    return Err(FsError::Invalid(format!(
                        "refusing to create a tag with a digest reference: {s}"
                    )));
                }
                Some(r)
            }
        };
        let rec = ctr::find(store, paths, &a.container)?;
        let opts = CommitOptions {
            author: a.author.clone(),
            message: a.message.clone(),
            changes: a.change.clone(),
            pause: a.pause,
            reference,
        };
        Ok(cfs::commit(store, paths, rec, &opts)?.id.to_string())
    })();
    match r {
        Ok(id) => {
            println!("{id}");
            0
        }
        Err(e) => report(&e),
    }
}

/// Docker's `splitCpArg`: `CONTAINER:PATH`, or a local path (absolute, or
/// starting with `.`, or without a colon).
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.starts_with('.') => (Some(c), p),
        _ => (None, arg),
    }
}

/// `cp`: between a container and the host (or a tar stream).
pub fn cp(store: &mut ImageStore, paths: &Paths, a: &CpArgs) -> i32 {
    if a.source.is_empty() {
        return report(&FsError::Local("source can not be empty".into()));
    }
    if a.destination.is_empty() {
        return report(&FsError::Local("destination can not be empty".into()));
    }
    let (src_c, src) = split_cp_arg(&a.source);
    let (dst_c, dst) = split_cp_arg(&a.destination);
    let opts = CopyOptions {
        archive: a.archive,
        follow_link: a.follow_link,
    };
    let progress = !a.quiet && std::io::stderr().is_terminal();
    let r = match (src_c, dst_c) {
        (Some(_), Some(_)) => Err(FsError::Local(
            "copying between containers is not supported".into(),
        )),
        (None, None) => Err(FsError::Local(
            "must specify at least one container source".into(),
        )),
        (Some(c), None) => ctr::find(store, paths, c)
            .map_err(FsError::from)
            .and_then(|rec| {
                if dst == "-" {
                    no_sigpipe();
                    let mut out =
                        std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
                    cfs::copy_from_container(
                        store,
                        paths,
                        &rec,
                        c,
                        src,
                        HostDest::Stream(&mut out),
                        opts,
                    )?;
                    return Ok(None);
                }
                let n = cfs::copy_from_container(
                    store,
                    paths,
                    &rec,
                    c,
                    src,
                    HostDest::Path(dst),
                    opts,
                )?;
                Ok(Some((n, dst.to_string())))
            }),
        (None, Some(c)) => ctr::find(store, paths, c)
            .map_err(FsError::from)
            .and_then(|rec| {
                if src == "-" {
                    let stdin = Box::new(std::io::stdin());
                    cfs::copy_to_container(
                        store,
                        paths,
                        &rec,
                        c,
                        HostSource::Stream(stdin),
                        dst,
                        opts,
                    )?;
                    return Ok(None);
                }
                let n = cfs::copy_to_container(
                    store,
                    paths,
                    &rec,
                    c,
                    HostSource::Path(src),
                    dst,
                    opts,
                )?;
                Ok(Some((n, format!("{c}:{}", cfs::container_path(dst)))))
            }),
    };
    match r {
        Ok(Some((n, to))) if progress => {
            eprintln!("Successfully copied {} to {to}", crate::human::size(n));
            0
        }
        Ok(_) => 0,
        Err(e) if e.is_broken_pipe() => 1,
        Err(e) => report(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_arguments_split_like_docker() {
        assert_eq!(split_cp_arg("c:/etc"), (Some("c"), "/etc"));
        assert_eq!(split_cp_arg("c:etc"), (Some("c"), "etc"));
        assert_eq!(split_cp_arg("/abs:x"), (None, "/abs:x"));
        assert_eq!(split_cp_arg("./file:name"), (None, "./file:name"));
        assert_eq!(split_cp_arg("file"), (None, "file"));
        assert_eq!(split_cp_arg("-"), (None, "-"));
        assert_eq!(split_cp_arg("c:"), (Some("c"), ""));
    }
}
