//! `berth images`, `berth image ls|inspect`: the image store as Docker's
//! CLI shows it.

use crate::human;
use anyhow::Context as _;
use berth_engine::{ImageRecord, ImageStore};
use berth_image::reference;
use serde_json::{json, Value};
use std::io::Write;

/// (repository, tag) pairs of an image for `images`, familiar form;
/// an untagged image shows as <none>.
fn repo_tags(img: &ImageRecord) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = img
        .tags
        .iter()
        .filter_map(|t| reference::parse(t).ok())
        .map(|r| {
            (
                r.familiar_repository(),
                r.tag().unwrap_or("<none>").to_string(),
            )
        })
        .collect();
    if out.is_empty() {
        out.push(("<none>".into(), "<none>".into()));
    }
    out
}

/// Go's path.Match for the `reference` filter: `*` and `?` within one
/// path segment, everything else literal.
fn glob(pattern: &str, name: &str) -> bool {
    fn m(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], n) || (!n.is_empty() && n[0] != b'/' && m(p, &n[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), name.as_bytes())
}

/// `--filter` of `images`: values of one key are ORed, keys ANDed.
pub struct ImageFilter {
    by_key: std::collections::BTreeMap<String, Vec<String>>,
}

impl ImageFilter {
    pub fn parse(filters: &[String]) -> anyhow::Result<ImageFilter> {
        let mut by_key: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for f in filters {
            let (k, v) = f.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("bad format of filter (expected name=value): {f}")
            })?;
            if !matches!(k, "dangling" | "reference" | "label" | "before" | "since") {
                anyhow::bail!("invalid filter '{k}'");
            }
            if k == "dangling" && !matches!(v, "true" | "false" | "1" | "0") {
                anyhow::bail!("invalid filter 'dangling={v}'");
            }
            by_key.entry(k.to_string()).or_default().push(v.to_string());
        }
        Ok(ImageFilter { by_key })
    }

    fn created_of(store: &mut ImageStore, name: &str) -> anyhow::Result<String> {
        match store.find_stored(name) {
            Ok(i) => Ok(i.created),
            Err(e) if e.is_not_found() => anyhow::bail!("No such image: {name}"),
            Err(e) => Err(e.into()),
        }
    }

    /// Keep the images that pass.
    pub fn apply(
        &self,
        store: &mut ImageStore,
        images: Vec<ImageRecord>,
    ) -> anyhow::Result<Vec<ImageRecord>> {
        let mut before = Vec::new();
        for n in self.by_key.get("before").into_iter().flatten() {
            before.push(Self::created_of(store, n)?);
        }
        let mut since = Vec::new();
        for n in self.by_key.get("since").into_iter().flatten() {
            since.push(Self::created_of(store, n)?);
        }
        let mut out = Vec::new();
        for img in images {
            if let Some(vals) = self.by_key.get("dangling") {
                let dangling = img.tags.is_empty();
                if !vals.iter().any(|v| (v == "true" || v == "1") == dangling) {
                    continue;
                }
            }
            if let Some(pats) = self.by_key.get("reference") {
                let names: Vec<String> = img
                    .tags
                    .iter()
                    .filter_map(|t| reference::parse(t).ok())
                    .flat_map(|r| [r.familiar(), r.familiar_repository()])
                    .collect();
                if !pats.iter().any(|p| names.iter().any(|n| glob(p, n))) {
                    continue;
                }
            }
            if let Some(labels) = self.by_key.get("label") {
                let cfg: Value = serde_json::from_slice(
                    &store
                        .blobs
                        .read_all(&img.id, berth_image::manifest::MAX_CONFIG_SIZE as u64)?,
                )?;
                let have = &cfg["config"]["Labels"];
                let ok = labels.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => have[k].as_str() == Some(v),
                    None => !have[l.as_str()].is_null(),
                });
                if !ok {
                    continue;
                }
            }
            // RFC 3339 times of one format compare as strings.
            if !before.iter().all(|b| img.created < *b) || !since.iter().all(|s| img.created > *s) {
                continue;
            }
            out.push(img);
        }
        Ok(out)
    }
}

/// Options of `berth images`.
pub struct ListOptions {
    pub quiet: bool,
    pub no_trunc: bool,
    pub digests: bool,
    pub filters: Vec<String>,
    pub format: Option<String>,
}

/// One row of `images` as `--format` sees it (Docker's field names).
fn image_row(img: &ImageRecord, repo: &str, tag: &str, no_trunc: bool) -> Value {
    let id = if no_trunc {
        img.id.to_string()
    } else {
        img.id.short().to_string()
    };
    let size = human::size(img.size);
    json!({
        "Containers": "N/A",
        "CreatedAt": img.created,
        "CreatedSince": human::ago(&img.created),
        "Digest": img.manifest_digest.as_ref().map(|d| d.to_string()).unwrap_or_else(|| "<none>".into()),
        "ID": id,
        "Repository": repo,
        "SharedSize": "N/A",
        "Size": size,
        "Tag": tag,
        "UniqueSize": "N/A",
        "VirtualSize": size,
    })
}

/// `images --format`: Go template, `table …` or `json`.
fn list_formatted(images: &[ImageRecord], o: &ListOptions, format: &str) -> anyhow::Result<String> {
    let fmt = crate::gotmpl::format(format)?;
    let mut rows = Vec::new();
    for img in images {
        for (repo, tag) in repo_tags(img) {
            rows.push(image_row(img, &repo, &tag, o.no_trunc));
        }
    }
    let headers: std::collections::HashMap<String, String> = [
        ("ID", "IMAGE ID"),
        ("Repository", "REPOSITORY"),
        ("Tag", "TAG"),
        ("Digest", "DIGEST"),
        ("CreatedSince", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("Size", "SIZE"),
        ("VirtualSize", "SIZE"),
        ("SharedSize", "SHARED SIZE"),
        ("UniqueSize", "UNIQUE SIZE"),
        ("Containers", "CONTAINERS"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let default = crate::gotmpl::parse(
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}",
    )?;
    Ok(fmt.render(&rows, &headers, &default)?)
}

/// `berth images`: REPOSITORY TAG [DIGEST] IMAGE ID CREATED SIZE.
pub fn list(store: &mut ImageStore, o: &ListOptions) -> anyhow::Result<i32> {
    let filter = ImageFilter::parse(&o.filters)?;
    let images = filter.apply(store, store.list()?)?;
    let mut out = std::io::stdout().lock();
    let id = |img: &ImageRecord| {
        if o.no_trunc {
            img.id.to_string()
        } else {
            img.id.short().to_string()
        }
    };
    if o.quiet {
        for img in &images {
            writeln!(out, "{}", id(img))?;
        }
        return Ok(0);
    }
    if let Some(f) = o.format.as_deref().filter(|f| !f.is_empty()) {
        write!(out, "{}", list_formatted(&images, o, f)?)?;
        return Ok(0);
    }
    let mut header = vec!["REPOSITORY", "TAG"];
    if o.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for img in &images {
        for (repo, tag) in repo_tags(img) {
            let mut row = vec![repo, tag];
            if o.digests {
                row.push(
                    img.manifest_digest
                        .as_ref()
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "<none>".into()),
                );
            }
            row.extend([id(img), human::ago(&img.created), human::size(img.size)]);
            rows.push(row);
        }
    }
    write!(out, "{}", human::table(&rows))?;
    Ok(0)
}

/// The Docker-shaped inspect object of an image.
pub fn inspect_value(store: &ImageStore, img: &ImageRecord) -> anyhow::Result<Value> {
    let config_bytes = store
        .blobs
        .read_all(&img.id, berth_image::manifest::MAX_CONFIG_SIZE as u64)?;
    let config: Value = serde_json::from_slice(&config_bytes).context("image config")?;
    let refs: Vec<reference::Reference> = img
        .tags
        .iter()
        .filter_map(|t| reference::parse(t).ok())
        .collect();
    // A reference by digest (an image pulled as repo@sha256:…) is a repo
    // digest, not a tag.
    let tags: Vec<String> = refs
        .iter()
        .filter(|r| r.digest().is_none())
        .map(|r| r.familiar())
        .collect();
    let mut digests: Vec<String> = Vec::new();
    for r in &refs {
        let Some(d) = r.digest().or(img.manifest_digest.as_ref()) else {
            continue;
        };
        let rd = format!("{}@{d}", r.familiar_repository());
        if !digests.contains(&rd) {
            digests.push(rd);
        }
    }
    Ok(json!({
        "Id": img.id.to_string(),
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": img.parent.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        "Comment": config.get("comment").cloned().unwrap_or(json!("")),
        "Created": img.created,
        "DockerVersion": "",
        "Author": config.get("author").cloned().unwrap_or(json!("")),
        "Config": config.get("config").cloned().unwrap_or(Value::Null),
        "Architecture": img.architecture,
        "Os": img.os,
        "Size": img.size,
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "LowerDir": img.layers.iter().rev()
                    .map(|c| store.layers.diff_dir(c).display().to_string())
                    .collect::<Vec<_>>().join(":"),
            }
        },
        "RootFS": {
            "Type": "layers",
            "Layers": config.pointer("/rootfs/diff_ids").cloned().unwrap_or(json!([])),
        },
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }))
    .map(|mut v| {
        if let Some(variant) = config.get("variant").filter(|v| !v.is_null()) {
            v["Variant"] = variant.clone();
        }
        v
    })
}

/// `berth image inspect NAME…`: a JSON array; a missing name is an error
/// after the others are shown, as Docker does.
pub fn inspect(
    store: &mut ImageStore,
    names: &[String],
    format: Option<&str>,
) -> anyhow::Result<i32> {
    let template = format
        .filter(|f| !f.is_empty() && *f != "json")
        .map(crate::gotmpl::parse)
        .transpose()?;
    let mut found = Vec::new();
    let mut code = 0;
    for n in names {
        match store.find(n) {
            Ok(img) => found.push(inspect_value(store, &img)?),
            Err(e) if e.is_not_found() => {
                eprintln!("Error: No such image: {n}");
                code = 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    match template {
        Some(t) => print!("{}", t.render_lines(&found)?),
        None => println!("{}", serde_json::to_string_pretty(&found)?),
    }
    Ok(code)
}

fn familiar(reference: &str) -> String {
    reference::parse(reference)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| reference.to_string())
}

/// `berth tag SOURCE TARGET`.
pub fn tag(store: &mut ImageStore, source: &str, target: &str) -> anyhow::Result<i32> {
    match store.tag(source, target) {
        Ok(_) => Ok(0),
        Err(e) if e.is_not_found() => {
            eprintln!("Error response from daemon: No such image: {source}");
            Ok(1)
        }
        Err(berth_engine::ImageError::Reference(e)) => {
            eprintln!("Error parsing reference: {target:?} is not a valid repository/tag: {e}");
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}

/// `berth rmi [-f] IMAGE…`: Docker's Untagged/Deleted lines; a missing
/// image is reported and the others still go.
pub fn remove(store: &mut ImageStore, names: &[String], force: bool) -> anyhow::Result<i32> {
    let mut code = 0;
    let mut out = std::io::stdout().lock();
    for n in names {
        match store.remove(n, force) {
            Ok(done) => {
                for r in done {
                    match r {
                        berth_engine::Removal::Untagged(t) => {
                            writeln!(out, "Untagged: {}", familiar(&t))?
                        }
                        berth_engine::Removal::Deleted(d) => writeln!(out, "Deleted: {d}")?,
                    }
                }
            }
            Err(e) if e.is_not_found() => {
                eprintln!("Error response from daemon: No such image: {n}");
                code = 1;
            }
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `berth image prune [-a] [-f]`.
pub fn prune(store: &mut ImageStore, all: bool, force: bool) -> anyhow::Result<i32> {
    if !force {
        let what = if all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let (done, freed) = store.prune(all)?;
    let mut out = std::io::stdout().lock();
    if !done.is_empty() {
        writeln!(out, "Deleted Images:")?;
        for r in done {
            match r {
                berth_engine::Removal::Untagged(t) => writeln!(out, "untagged: {}", familiar(&t))?,
                berth_engine::Removal::Deleted(d) => writeln!(out, "deleted: {d}")?,
            }
        }
        writeln!(out)?;
    }
    writeln!(out, "Total reclaimed space: {}", human::size(freed))?;
    Ok(0)
}

/// `berth import [-c CHANGE]… [-m MSG] FILE|DIR|- [REPOSITORY[:TAG]]`:
/// prints the new image's ID.
pub fn import(
    store: &mut ImageStore,
    source: &str,
    tag: Option<&str>,
    changes: &[String],
    message: Option<&str>,
) -> anyhow::Result<i32> {
    let tag = match tag.map(reference::parse).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "Error parsing reference: {:?} is not a valid repository/tag: {e}",
                tag.unwrap_or_default()
            );
            return Ok(1);
        }
    };
    let default_message = format!("Imported from {source}");
    let message = Some(message.unwrap_or(&default_message));
    let path = std::path::Path::new(source);
    let img = if source == "-" {
        store.import(std::io::stdin().lock(), tag, changes, message)?
    } else if path.is_dir() {
        // A directory becomes a layer tar first (in the store, so on the
        // same disk), then imports like a tarball.
        let tmp = tempfile_in(store.root())?;
        let opts = berth_image::layer::DiffOptions {
            compression: berth_image::layer::Compression::None,
            ..Default::default()
        };
        berth_image::layer::diff(path, std::fs::File::create(&tmp.0)?, &opts)
            .with_context(|| format!("import {source}"))?;
        let f = std::fs::File::open(&tmp.0)?;
        store.import(f, tag, changes, message)?
    } else {
        let f = std::fs::File::open(path).with_context(|| format!("open {source}"))?;
        store.import(f, tag, changes, message)?
    };
    println!("{}", img.id);
    Ok(0)
}

/// A temp file path under the store that is removed when dropped.
struct TempPath(std::path::PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_in(root: &std::path::Path) -> anyhow::Result<TempPath> {
    let dir = root.join("tmp");
    std::fs::create_dir_all(&dir)?;
    Ok(TempPath(
        dir.join(format!("import-{}.tar", std::process::id())),
    ))
}

/// `berth history IMAGE`: the config's history, newest first, with each
/// non-empty step's layer size.
pub fn history(
    store: &mut ImageStore,
    name: &str,
    quiet: bool,
    no_trunc: bool,
    format: Option<&str>,
) -> anyhow::Result<i32> {
    let img = match store.find(name) {
        Ok(i) => i,
        Err(e) if e.is_not_found() => {
            eprintln!("Error response from daemon: No such image: {name}");
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let config: Value = serde_json::from_slice(
        &store
            .blobs
            .read_all(&img.id, berth_image::manifest::MAX_CONFIG_SIZE as u64)?,
    )?;
    let mut sizes = Vec::new();
    for chain in &img.layers {
        sizes.push(store.db.layer(chain)?.map(|l| l.size).unwrap_or(0));
    }
    let mut layer_sizes = sizes.into_iter();
    let mut rows = Vec::new();
    for h in config["history"].as_array().cloned().unwrap_or_default() {
        let empty = h["empty_layer"].as_bool().unwrap_or(false);
        let size = if empty {
            0
        } else {
            layer_sizes.next().unwrap_or(0)
        };
        let by = h["created_by"].as_str().unwrap_or("").to_string();
        let by = if !no_trunc && by.chars().count() > 45 {
            format!("{}…", by.chars().take(44).collect::<String>())
        } else {
            by
        };
        rows.push(vec![
            "<missing>".to_string(),
            human::ago(h["created"].as_str().unwrap_or("")),
            by,
            human::size(size),
            h["comment"].as_str().unwrap_or("").to_string(),
        ]);
    }
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top[0] = if no_trunc {
            img.id.to_string()
        } else {
            img.id.short().to_string()
        };
    }
    let mut out = std::io::stdout().lock();
    if quiet {
        for r in &rows {
            writeln!(out, "{}", r[0])?;
        }
        return Ok(0);
    }
    if let Some(f) = format.filter(|f| !f.is_empty()) {
        let values: Vec<Value> = rows
            .iter()
            .map(|r| json!({"ID": r[0], "CreatedSince": r[1], "CreatedBy": r[2], "Size": r[3], "Comment": r[4]}))
            .collect();
        let headers: std::collections::HashMap<String, String> = [
            ("ID", "IMAGE"),
            ("CreatedSince", "CREATED"),
            ("CreatedBy", "CREATED BY"),
            ("Size", "SIZE"),
            ("Comment", "COMMENT"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let fmt = crate::gotmpl::format(f)?;
        let default = crate::gotmpl::parse(
            "table {{.ID}}\\t{{.CreatedSince}}\\t{{.CreatedBy}}\\t{{.Size}}\\t{{.Comment}}",
        )?;
        let text = fmt.render(&values, &headers, &default)?;
        write!(out, "{text}")?;
        return Ok(0);
    }
    rows.insert(
        0,
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
            .map(String::from)
            .to_vec(),
    );
    write!(out, "{}", human::table(&rows))?;
    Ok(0)
}

/// `berth load [-i FILE] [-q]`: images from an archive (docker-archive or
/// OCI layout, compressed or not) on stdin or in a file.
pub fn load(store: &mut ImageStore, input: Option<&str>, quiet: bool) -> anyhow::Result<i32> {
    let loaded = match input {
        None | Some("-") => {
            let stdin = std::io::stdin();
            if std::io::IsTerminal::is_terminal(&stdin) {
                eprintln!("Error: requested load from stdin, but stdin is empty");
                return Ok(1);
            }
            // `berth load < file`: a file is read the fast way.
            let file = std::os::fd::AsFd::as_fd(&stdin)
                .try_clone_to_owned()
                .map(std::fs::File::from)
                .ok()
                .filter(|f| f.metadata().is_ok_and(|m| m.is_file()));
            let total = file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map(|m| m.len());
            let progress = crate::progress::Bytes::new("Loading", total, quiet);
            let r = match file {
                Some(f) => berth_engine::archive::load_file(store, f, &|n| progress.add(n)),
                None => {
                    let reader = crate::progress::Counting {
                        inner: stdin.lock(),
                        progress: &progress,
                    };
                    berth_engine::archive::load(store, reader)
                }
            };
            progress.finish();
            r?
        }
        Some(path) => {
            let f = std::fs::File::open(path).with_context(|| format!("open {path}"))?;
            let total = f.metadata().ok().map(|m| m.len());
            let progress = crate::progress::Bytes::new("Loading", total, quiet);
            let r = berth_engine::archive::load_file(store, f, &|n| progress.add(n));
            progress.finish();
            r?
        }
    };
    let mut out = std::io::stdout().lock();
    for l in loaded {
        if l.tags.is_empty() {
            writeln!(out, "Loaded image ID: {}", l.image.id)?;
        }
        for t in &l.tags {
            writeln!(out, "Loaded image: {}", t.familiar())?;
        }
    }
    Ok(0)
}

/// `berth save [-o FILE] IMAGE…`: one archive (docker-archive and OCI
/// layout at once). With -o the file appears only once complete.
pub fn save(store: &mut ImageStore, names: &[String], output: Option<&str>) -> anyhow::Result<i32> {
    let progress = crate::progress::Bytes::new("Saving", None, false);
    let result = match output {
        None | Some("-") => {
            let stdout = std::io::stdout();
            if std::io::IsTerminal::is_terminal(&stdout) {
                eprintln!(
                    "Error: cowardly refusing to save to a terminal. Use the -o flag or redirect"
                );
                return Ok(1);
            }
            berth_engine::save::save(
                store,
                names,
                std::io::BufWriter::new(stdout.lock()),
                |_, _| {},
            )
        }
        Some(path) => {
            let target = std::path::Path::new(path);
            let tmp = target.with_file_name(format!(
                ".{}.berth-tmp",
                target
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            let f = std::fs::File::create(&tmp).with_context(|| format!("create {path}"))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            let r = berth_engine::save::save(store, names, &mut w, |_, n| progress.add(n))
                .and_then(|()| {
                    w.flush().map_err(|source| berth_engine::ImageError::Io {
                        path: tmp.clone(),
                        source,
                    })
                });
            match r {
                Ok(()) => {
                    std::fs::rename(&tmp, target).with_context(|| format!("write {path}"))?;
                    Ok(())
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
            }
        }
    };
    progress.finish();
    match result {
        Ok(()) => Ok(0),
        Err(e) if e.is_not_found() => {
            eprintln!("Error response from daemon: {e}");
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}
