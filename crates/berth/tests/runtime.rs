//! Tier-1 conformance suite of berth's OCI runtime (`berth-runtime`), organised by the
//! MUST clauses of the OCI runtime-spec v1.2 (config.md, config-linux.md, runtime.md) and
//! checked from inside the container where that makes sense.
//!
//! Needs root: every test fails when not root, unless `BERTH_SKIP_ROOT_TESTS=1` (then
//! each prints "skipped: needs root"). Also needs Debian's busybox-static
//! (`/bin/busybox`), iproute2 (`ip netns`), util-linux (`unshare`) and podman.
//!
//! The runtime under test is `$BERTH_TEST_RUNTIME` if set (e.g. `/usr/sbin/runc`, to
//! check the tests themselves), else the `berth-runtime` binary of this package. Tests of
//! berth-only behaviour are skipped (with a message) for other runtimes; a few checks are
//! relaxed for runc older than 1.2 where it is known to differ from the spec.
//!
//!     cargo test -p berth --test runtime                  # as root
//!     cargo nextest run -p berth --test runtime
//!     BERTH_TEST_RUNTIME=/usr/sbin/runc cargo test -p berth --test runtime
//!
//! `BERTH_TEST_KEEP=1` keeps the temp dir (bundle, state, outputs) of a failing test.

/// Returns from the test (after printing "skipped: needs root") when it may not run.
macro_rules! need_root {
    () => {
        if !$crate::harness::root_or_skip() {
            return;
        }
    };
}

/// Returns from the test unless the runtime under test is berth's.
macro_rules! berth_only {
    ($why:expr) => {
        if !$crate::harness::is_berth() {
            eprintln!(
                "skipped: berth-only ({}); runtime under test is {}",
                $why,
                $crate::harness::runtime_name()
            );
            return;
        }
    };
}

#[macro_use]
#[path = "runtime/harness.rs"]
mod harness;

#[path = "runtime/cgroups.rs"]
mod cgroups;
#[path = "runtime/errors.rs"]
mod errors;
#[path = "runtime/exec.rs"]
mod exec;
#[path = "runtime/hello.rs"]
mod hello;
#[path = "runtime/hooks.rs"]
mod hooks;
#[path = "runtime/lifecycle.rs"]
mod lifecycle;
#[path = "runtime/mounts.rs"]
mod mounts;
#[path = "runtime/namespaces.rs"]
mod namespaces;
#[path = "runtime/podman.rs"]
mod podman;
#[path = "runtime/process.rs"]
mod process;
#[path = "runtime/seccomp.rs"]
mod seccomp;
#[path = "runtime/security.rs"]
mod security;
