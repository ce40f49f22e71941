//! Credentials in Docker's client configuration format.
//!
//! `config.json` in `$DOCKER_CONFIG` (or `~/.docker`): `auths` maps a
//! registry to `{"auth": base64("user:password")}` (or an
//! `identitytoken`); `credsStore` names a `docker-credential-<name>`
//! helper for every registry and `credHelpers` one per registry. A helper
//! reads the server URL (`get`, `erase`) or `{"ServerURL","Username",
//! "Secret"}` (`store`) on its stdin. Other keys of the file are kept as
//! they are when berth writes it (atomically, mode 0600).

use base64::Engine as _;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    /// A password, or an identity token when `username` is `<token>`.
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("credential helper docker-credential-{helper}: {why}")]
    Helper { helper: String, why: String },
}

type Result<T> = std::result::Result<T, CredsError>;

/// The client configuration directory: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker")
}

/// `config.json`, read once; changed in memory and written back whole.
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

/// `https://host/v1/`, `http://host`, `host/` → `host`.
fn normalise_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn same_registry(stored: &str, key: &str) -> bool {
    stored == key || normalise_key(stored) == normalise_key(key)
}

impl DockerConfig {
    /// Read `<dir>/config.json` (missing: empty).
    pub fn load(dir: &Path) -> Result<DockerConfig> {
        let path = dir.join("config.json");
        let err = |why: String| CredsError::File {
            path: path.clone(),
            why,
        };
        let doc = match std::fs::read(&path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(b) => match serde_json::from_slice::<Value>(&b) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(err("not a JSON object".into())),
                Err(e) => return Err(err(format!("invalid JSON: {e}"))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(DockerConfig { path, doc })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The helper for `key`, if any: `credHelpers` first, then `credsStore`.
    fn helper_for(&self, key: &str) -> Option<String> {
        if let Some(Value::Object(h)) = self.doc.get("credHelpers") {
            for (k, v) in h {
                if same_registry(k, key) {
                    return v.as_str().filter(|s| !s.is_empty()).map(String::from);
                }
            }
        }
        self.doc
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    }

    fn auths(&mut self) -> &mut Map<String, Value> {
        let v = self
            .doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
        match v {
            Value::Object(m) => m,
            // Made an object just above.
            _ => unreachable!(),
        }
    }

    /// The credential for the registry `key` (see
    /// [`credential_key`](crate::credential_key)), if one is stored.
    pub fn get(&self, key: &str) -> Result<Option<Credential>> {
        if let Some(helper) = self.helper_for(key) {
            return helper_get(&helper, key);
        }
        let Some(Value::Object(auths)) = self.doc.get("auths") else {
            return Ok(None);
        };
        let Some((_, entry)) = auths.iter().find(|(k, _)| same_registry(k, key)) else {
            return Ok(None);
        };
        let err = |why: &str| CredsError::File {
            path: self.path.clone(),
            why: format!("auths.{key}: {why}"),
        };
        if let Some(tok) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(Credential {
                username: "<token>".into(),
                secret: tok.into(),
            }));
        }
        let Some(auth) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        else {
            return Ok(None);
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| err("auth is not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| err("auth is not UTF-8"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| err("auth is not user:password"))?;
        Ok(Some(Credential {
            username: u.into(),
            secret: p.trim_end_matches('\n').into(),
        }))
    }

    /// Remember `cred` for `key`: in its helper when one is configured
    /// (the `auths` entry then stays empty, as Docker leaves it), else as
    /// base64 in `auths`. Call [`save`](Self::save) after.
    pub fn store(&mut self, key: &str, cred: &Credential) -> Result<()> {
        if let Some(helper) = self.helper_for(key) {
            let body = serde_json::json!({
                "ServerURL": key, "Username": cred.username, "Secret": cred.secret,
            });
            run_helper(&helper, "store", body.to_string().as_bytes())?;
            let auths = self.auths();
            auths.retain(|k, _| !same_registry(k, key));
            auths.insert(key.into(), Value::Object(Map::new()));
            return Ok(());
        }
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", cred.username, cred.secret));
        let auths = self.auths();
        auths.retain(|k, _| !same_registry(k, key));
        auths.insert(key.into(), serde_json::json!({ "auth": auth }));
        Ok(())
    }

    /// Forget `key`'s credential; whether there was one.
    pub fn erase(&mut self, key: &str) -> Result<bool> {
        let mut had = false;
        if let Some(helper) = self.helper_for(key) {
            had = run_helper(&helper, "erase", key.as_bytes()).is_ok();
        }
        let auths = self.auths();
        let before = auths.len();
        auths.retain(|k, _| !same_registry(k, key));
        Ok(had || auths.len() != before)
    }

    /// Write the file back atomically (temp file, fsync, rename), mode 0600.
    pub fn save(&self) -> Result<()> {
        let err = |why: String| CredsError::File {
            path: self.path.clone(),
            why,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let bytes = serde_json::to_vec_pretty(&self.doc).map_err(|e| err(e.to_string()))?;
        let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e.to_string())
        })
    }
}

fn run_helper(helper: &str, verb: &str, input: &[u8]) -> Result<Vec<u8>> {
    let prog = format!("docker-credential-{helper}");
    let herr = |why: String| CredsError::Helper {
        helper: helper.into(),
        why,
    };
    let mut child = Command::new(&prog)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| herr(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| herr(format!("writing to it: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| herr(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(if out.stdout.is_empty() {
            &out.stderr
        } else {
            &out.stdout
        })
        .trim()
        .to_string();
        return Err(herr(format!("{verb} failed: {msg}")));
    }
    Ok(out.stdout)
}

fn helper_get(helper: &str, key: &str) -> Result<Option<Credential>> {
    let out = match run_helper(helper, "get", key.as_bytes()) {
        Ok(o) => o,
        Err(CredsError::Helper { why, .. }) if why.contains("credentials not found") => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    #[derive(serde::Deserialize)]
    struct Got {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let got: Got = serde_json::from_slice(&out).map_err(|e| CredsError::Helper {
        helper: helper.into(),
        why: format!("get answered invalid JSON: {e}"),
    })?;
    if got.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential {
        username: got.username,
        secret: got.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cred(u: &str, p: &str) -> Credential {
        Credential {
            username: u.into(),
            secret: p.into(),
        }
    }

    #[test]
    fn auths_round_trip_keeps_other_keys_and_mode_0600() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"psFormat":"table {{.ID}}","auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#,
        )
        .unwrap();
        let mut c = DockerConfig::load(d.path()).unwrap();
        assert_eq!(
            c.get("https://index.docker.io/v1/").unwrap(),
            Some(cred("u", "p"))
        );
        assert_eq!(c.get("r.lan:5000").unwrap(), None);
        c.store("r.lan:5000", &cred("alice", "s:e:cret")).unwrap();
        c.save().unwrap();
        let path = d.path().join("config.json");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "table {{.ID}}");
        assert_eq!(v["auths"]["r.lan:5000"]["auth"], "YWxpY2U6czplOmNyZXQ=");
        let mut c = DockerConfig::load(d.path()).unwrap();
        // Keys written with a scheme still match.
        assert_eq!(
            c.get("https://r.lan:5000").unwrap(),
            Some(cred("alice", "s:e:cret"))
        );
        assert!(c.erase("r.lan:5000").unwrap());
        assert!(!c.erase("r.lan:5000").unwrap());
        c.save().unwrap();
        let c = DockerConfig::load(d.path()).unwrap();
        assert_eq!(c.get("r.lan:5000").unwrap(), None);
    }

    #[test]
    fn identity_tokens_and_bad_entries() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"auths":{"a.io":{"identitytoken":"tok"},"b.io":{"auth":"%%%"}}}"#,
        )
        .unwrap();
        let c = DockerConfig::load(d.path()).unwrap();
        assert_eq!(c.get("a.io").unwrap(), Some(cred("<token>", "tok")));
        let e = c.get("b.io").unwrap_err().to_string();
        assert!(e.contains("auths.b.io: auth is not base64"), "{e}");
        std::fs::write(d.path().join("config.json"), "[1]").unwrap();
        assert!(DockerConfig::load(d.path()).is_err());
    }

    #[test]
    fn cred_helpers_win_over_creds_store_and_auths() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"auths":{"a.io":{"auth":"dTpw"}},"credsStore":"berth-test-none",
                "credHelpers":{"b.io":"berth-test-other"}}"#,
        )
        .unwrap();
        let c = DockerConfig::load(d.path()).unwrap();
        // Each registry goes to its helper (which does not exist here).
        let e = c.get("b.io").unwrap_err().to_string();
        assert!(e.contains("docker-credential-berth-test-other"), "{e}");
        let e = c.get("a.io").unwrap_err().to_string();
        assert!(e.contains("docker-credential-berth-test-none"), "{e}");
    }

    #[test]
    fn docker_hub_has_its_registry_host_and_key() {
        assert_eq!(crate::registry_host("docker.io"), "registry-1.docker.io");
        assert_eq!(crate::registry_host("ghcr.io"), "ghcr.io");
        assert_eq!(
            crate::credential_key("docker.io"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(crate::credential_key("quay.io"), "quay.io");
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        assert!(!format!("{:?}", cred("u", "hunter2")).contains("hunter2"));
    }
}
