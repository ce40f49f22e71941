//! Reading and checking a bundle's `config.json`.

use crate::error::{Error, Result};
use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};

/// Read `<bundle>/config.json`. A parse error names the JSON path of the
/// offending field (`process.user.uid: invalid type …`).
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|e| Error::Config {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    parse(&data).map_err(|msg| Error::Config { path, msg })
}

/// Parse config.json bytes; the error names the field path.
pub fn parse(data: &[u8]) -> std::result::Result<Spec, String> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    serde_path_to_error::deserialize::<_, Spec>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// A container id may be used as a directory name and a cgroup name: no
/// path separators, no dot-only names, no control characters.
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |why| {
        Err(Error::InvalidId {
            id: id.to_string(),
            why,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if id == "." || id == ".." {
        return bad("a dot name");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+'))
    {
        return bad("only letters, digits and _ - . + are allowed");
    }
    Ok(())
}

/// The absolute root filesystem path of a bundle, checked to be a directory.
pub fn rootfs(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::field("root", "missing"))?;
    let p = root.path();
    let abs = if p.is_absolute() {
        p.clone()
    } else {
        bundle.join(p)
    };
    match std::fs::metadata(&abs) {
        Ok(m) if m.is_dir() => Ok(abs),
        Ok(_) => Err(Error::field(
            "root.path",
            format!("{} is not a directory", abs.display()),
        )),
        Err(e) => Err(Error::field("root.path", format!("{}: {e}", abs.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1.2_x").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\nb", "é"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_id(&"x".repeat(2000)).is_err());
    }

    #[test]
    fn parse_error_names_field() {
        let e =
            parse(br#"{"ociVersion":"1.0.2","process":{"user":{"uid":"x","gid":0},"cwd":"/"}}"#)
                .unwrap_err();
        assert!(e.starts_with("process.user.uid:"), "{e}");
        let e = parse(b"{not json").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }
}
