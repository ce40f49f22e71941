//! `--change` instructions of `import` and `commit`: the Dockerfile
//! instructions that only change an image's config.

use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    #[error("{0} is not a valid change command")]
    Unknown(String),
    #[error("invalid change {change:?}: {why}")]
    Invalid { change: String, why: &'static str },
}

/// The exec form `["a", "b"]` or the shell form `a b` (run by /bin/sh -c).
fn command(args: &str) -> Value {
    match serde_json::from_str::<Vec<String>>(args) {
        Ok(v) => json!(v),
        Err(_) => json!(["/bin/sh", "-c", args]),
    }
}

/// A JSON list or whitespace-separated words.
fn words(args: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(args)
        .unwrap_or_else(|_| args.split_whitespace().map(str::to_string).collect())
}

/// `KEY=value KEY2="v 2"` pairs, or the old `KEY value` form.
fn pairs(args: &str) -> Option<Vec<(String, String)>> {
    if !args.contains('=') {
        let (k, v) = args.split_once(char::is_whitespace)?;
        return Some(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let (v, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(char::is_whitespace).unwrap_or((after, ""))
        };
        out.push((k.trim().to_string(), v.to_string()));
        rest = next.trim_start();
    }
    Some(out)
}

/// Apply `changes` to an image config's `config` object (Docker's field
/// names: Cmd, Entrypoint, Env, WorkingDir, User, Labels, ExposedPorts,
/// Volumes, StopSignal, OnBuild).
pub fn apply(config: &mut Map<String, Value>, changes: &[String]) -> Result<(), ChangeError> {
    for change in changes {
        let change = change.trim();
        let (instr, args) = change
            .split_once(char::is_whitespace)
            .unwrap_or((change, ""));
        let args = args.trim();
        let invalid = |why| ChangeError::Invalid {
            change: change.to_string(),
            why,
        };
        if args.is_empty() {
            return Err(invalid("it needs an argument"));
        }
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => {
                config.insert("Cmd".into(), command(args));
            }
            "ENTRYPOINT" => {
                config.insert("Entrypoint".into(), command(args));
            }
            "WORKDIR" => {
                if !args.starts_with('/') {
                    return Err(invalid("WORKDIR must be an absolute path"));
                }
                config.insert("WorkingDir".into(), json!(args));
            }
            "USER" => {
                config.insert("User".into(), json!(args));
            }
            "STOPSIGNAL" => {
                config.insert("StopSignal".into(), json!(args));
            }
            "ENV" => {
                let kv = pairs(args).ok_or_else(|| invalid("expected KEY=value"))?;
                let env = config.entry("Env").or_insert_with(|| json!([]));
                let list = env
                    .as_array_mut()
                    .ok_or_else(|| invalid("Env is not a list"))?;
                for (k, v) in kv {
                    list.retain(|e| {
                        e.as_str().and_then(|s| s.split('=').next()) != Some(k.as_str())
                    });
                    list.push(json!(format!("{k}={v}")));
                }
            }
            "LABEL" => {
                let kv = pairs(args).ok_or_else(|| invalid("expected KEY=value"))?;
                let labels = config.entry("Labels").or_insert_with(|| json!({}));
                let map = labels
                    .as_object_mut()
                    .ok_or_else(|| invalid("Labels is not a map"))?;
                for (k, v) in kv {
                    map.insert(k, json!(v));
                }
            }
            "EXPOSE" => {
                let ports = config.entry("ExposedPorts").or_insert_with(|| json!({}));
                let map = ports
                    .as_object_mut()
                    .ok_or_else(|| invalid("ExposedPorts is not a map"))?;
                for p in args.split_whitespace() {
                    let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                    if port.parse::<u16>().map_or(true, |n| n == 0)
                        || !matches!(proto, "tcp" | "udp" | "sctp")
                    {
                        return Err(invalid("EXPOSE takes port[/tcp|udp|sctp]"));
                    }
                    map.insert(format!("{port}/{proto}"), json!({}));
                }
            }
            "VOLUME" => {
                let vols = config.entry("Volumes").or_insert_with(|| json!({}));
                let map = vols
                    .as_object_mut()
                    .ok_or_else(|| invalid("Volumes is not a map"))?;
                for v in words(args) {
                    if !v.starts_with('/') {
                        return Err(invalid("VOLUME paths must be absolute"));
                    }
                    map.insert(v, json!({}));
                }
            }
            "ONBUILD" => {
                let list = config.entry("OnBuild").or_insert_with(|| json!([]));
                if let Some(l) = list.as_array_mut() {
                    l.push(json!(args));
                }
            }
            _ => return Err(ChangeError::Unknown(instr.to_ascii_uppercase())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(changes: &[&str]) -> Result<Value, ChangeError> {
        let mut m = Map::new();
        apply(
            &mut m,
            &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )?;
        Ok(Value::Object(m))
    }

    #[test]
    fn instructions() {
        let c = run(&[
            "CMD [\"/bin/sh\", \"-c\", \"echo hi\"]",
            "ENTRYPOINT /init --flag",
            "ENV A=1 B=\"two words\"",
            "ENV A 3",
            "WORKDIR /srv",
            "USER 1000:1000",
            "LABEL org.x=y",
            "EXPOSE 80 53/udp",
            "VOLUME [\"/data\"]",
        ])
        .unwrap();
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/init --flag"]));
        assert_eq!(c["Env"], json!(["B=two words", "A=3"]));
        assert_eq!(c["WorkingDir"], "/srv");
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["Labels"], json!({"org.x": "y"}));
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Volumes"], json!({"/data": {}}));
    }

    #[test]
    fn bad_changes() {
        assert_eq!(run(&["FROM x"]), Err(ChangeError::Unknown("FROM".into())));
        assert!(run(&["WORKDIR rel"]).is_err());
        assert!(run(&["EXPOSE 0"]).is_err());
        assert!(run(&["EXPOSE 70000"]).is_err());
        assert!(run(&["VOLUME data"]).is_err());
        assert!(run(&["CMD"]).is_err());
    }
}
