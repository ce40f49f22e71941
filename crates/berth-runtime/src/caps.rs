//! The five capability sets of `process.capabilities`.

use crate::error::{Error, Result};
use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};
use std::str::FromStr;

/// The sets to give the container process. Capabilities this host's kernel
/// does not know, or that the runtime itself does not hold, are left out
/// with a warning (the kernel would refuse them anyway).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapsPlan {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

fn convert(set: &Option<Capabilities>, available: &CapsHashSet, which: &str) -> CapsHashSet {
    let mut out = CapsHashSet::new();
    for c in set.iter().flatten() {
        let name = format!("CAP_{c}");
        match Capability::from_str(&name) {
            Ok(cap) if available.contains(&cap) => {
                out.insert(cap);
            }
            _ => tracing::warn!(
                "process.capabilities.{which}: {name} is not available on this host, ignored"
            ),
        }
    }
    out
}

/// Work out the sets from the config. `available` is what the runtime may
/// hand on (its own bounding set).
pub fn plan(c: Option<&LinuxCapabilities>, available: &CapsHashSet) -> CapsPlan {
    let Some(c) = c else {
        return CapsPlan::default();
    };
    CapsPlan {
        bounding: convert(c.bounding(), available, "bounding"),
        effective: convert(c.effective(), available, "effective"),
        permitted: convert(c.permitted(), available, "permitted"),
        inheritable: convert(c.inheritable(), available, "inheritable"),
        ambient: convert(c.ambient(), available, "ambient"),
    }
}

/// What the calling process may hand on: its bounding set.
pub fn available() -> Result<CapsHashSet> {
    caps::read(None, CapSet::Bounding)
        .map_err(|e| Error::Init(format!("reading capabilities: {e}")))
}

/// Whether the calling process has `cap` in its effective set.
pub fn has_effective(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

fn err(what: &str, e: caps::errors::CapsError) -> Error {
    Error::Init(format!("capabilities: {what}: {e}"))
}

/// Drop from the bounding set everything the plan does not keep. Needs
/// CAP_SETPCAP, so it runs before the user switch.
pub fn apply_bounding(p: &CapsPlan) -> Result<()> {
    let current = caps::read(None, CapSet::Bounding).map_err(|e| err("bounding", e))?;
    for cap in current.difference(&p.bounding) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(|e| err("bounding", e))?;
    }
    Ok(())
}

/// Set the effective, permitted, inheritable and ambient sets (after the
/// user switch, which clears effective).
pub fn apply_sets(p: &CapsPlan) -> Result<()> {
    // Permitted first may shrink below effective: set effective to the
    // intersection first, then permitted, then effective again.
    let eff_now: CapsHashSet = p.effective.intersection(&p.permitted).copied().collect();
    caps::set(None, CapSet::Effective, &eff_now).map_err(|e| err("effective", e))?;
    caps::set(None, CapSet::Inheritable, &p.inheritable).map_err(|e| err("inheritable", e))?;
    caps::set(None, CapSet::Permitted, &p.permitted).map_err(|e| err("permitted", e))?;
    caps::set(None, CapSet::Effective, &eff_now).map_err(|e| err("effective", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| err("ambient", e))?;
    for cap in &p.ambient {
        if p.permitted.contains(cap) && p.inheritable.contains(cap) {
            caps::raise(None, CapSet::Ambient, *cap).map_err(|e| err("ambient", e))?;
        } else {
            tracing::debug!("ambient {cap} needs it permitted and inheritable; skipped");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Capability as Oci, LinuxCapabilitiesBuilder};

    #[test]
    fn plan_filters_unavailable() {
        let avail: CapsHashSet = [Capability::CAP_CHOWN, Capability::CAP_KILL]
            .into_iter()
            .collect();
        let c = LinuxCapabilitiesBuilder::default()
            .bounding(
                [Oci::Chown, Oci::SysResource]
                    .into_iter()
                    .collect::<Capabilities>(),
            )
            .effective([Oci::Kill].into_iter().collect::<Capabilities>())
            .permitted(Capabilities::new())
            .inheritable(Capabilities::new())
            .ambient(Capabilities::new())
            .build()
            .unwrap();
        let p = plan(Some(&c), &avail);
        assert_eq!(p.bounding, [Capability::CAP_CHOWN].into_iter().collect());
        assert_eq!(p.effective, [Capability::CAP_KILL].into_iter().collect());
        assert!(p.ambient.is_empty() && p.inheritable.is_empty());
        assert_eq!(plan(None, &avail), CapsPlan::default());
    }
}
