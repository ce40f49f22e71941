//! One registry, spoken to as the OCI distribution spec says.
//!
//! [`Client::connect`] pings `/v2/` (over HTTPS, or plain HTTP for an
//! insecure or loopback registry that does not speak TLS) and keeps the
//! challenge it answered with. Every request then carries what that
//! challenge asks for: nothing, Basic credentials, or a Bearer token for
//! the request's scopes, fetched from the challenge's realm (anonymously
//! or with the credentials), kept for reuse until it expires and fetched
//! again when the registry answers 401. Redirects are followed by hand, so
//! the registry's `Authorization` never goes to another host. 5xx, 429
//! and connection failures are retried with a doubling backoff.

use crate::auth::{parse_challenge, Challenge};
use crate::creds::Credential;
use crate::settings::Settings;
use base64::Engine as _;
use berth_image::digest::Digest;
use berth_image::manifest;
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry refused the credentials (or there were none).
    #[error("{0}")]
    Unauthorized(String),
    /// 404: no such repository, manifest or blob.
    #[error("{0}")]
    NotFound(String),
    /// Could not reach or talk to the registry (refused, TLS, timeout).
    #[error("{0}")]
    Transport(String),
    /// The registry answered something berth refuses (a bad document, a
    /// wrong digest, an unexpected status).
    #[error("{0}")]
    Protocol(String),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A request body that can be sent again (for retries).
pub enum Body<'a, 'b> {
    Empty,
    Bytes(&'a [u8]),
    Stream { open: &'a OpenFn<'b>, size: u64 },
}

/// Opens a blob's content from its start, as often as asked.
pub type OpenFn<'a> = dyn Fn() -> std::io::Result<Box<dyn Read + Send + 'a>> + Sync + 'a;

pub struct Client {
    host: String,
    base: Url,
    agent: ureq::Agent,
    creds: Option<Credential>,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    chunk_size: u64,
}

const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.min(5))
}

/// The `Accept` header of a manifest request: what berth reads, and
/// schema1 so that a registry that has nothing else says so (berth then
/// refuses it with a clear error rather than "not found").
fn accept_header() -> String {
    let mut types: Vec<&str> = manifest::ACCEPTED_MANIFEST_TYPES.to_vec();
    types.push(manifest::DOCKER_SCHEMA1_SIGNED_MANIFEST);
    types.join(", ")
}

/// `repository:<repo>:pull` or `…:pull,push`.
pub fn scope(repo: &str, push: bool) -> String {
    if push {
        format!("repository:{repo}:pull,push")
    } else {
        format!("repository:{repo}:pull")
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Reach the registry `host` (`name[:port]`, as in a reference; Docker
    /// Hub's `docker.io` is mapped to its registry host).
    pub fn connect(host: &str, creds: Option<Credential>, settings: &Settings) -> Result<Client> {
        let host = crate::registry_host(host).to_string();
        let tls = settings
            .tls_config(&host)
            .map_err(|e| RegistryError::Transport(format!("TLS configuration for {host}: {e}")))?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls)
            .timeout_connect(settings.timeout)
            .timeout_read(settings.timeout)
            .timeout_write(settings.timeout)
            .redirects(0)
            .user_agent(USER_AGENT)
            .build();
        let schemes: &[&str] = if settings.is_insecure(&host) {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = Url::parse(&format!("{scheme}://{host}/")).map_err(|e| {
                RegistryError::Protocol(format!("invalid registry host {host:?}: {e}"))
            })?;
            let client = Client {
                host: host.clone(),
                base,
                agent: agent.clone(),
                creds: creds.clone(),
                challenge: Mutex::new(None),
                tokens: Mutex::new(HashMap::new()),
                chunk_size: settings.chunk_size,
            };
            match client.ping() {
                Ok(()) => return Ok(client),
                // A server that speaks TLS with a certificate berth does not
                // trust is not tried over plain HTTP: that error is the news.
                Err(RegistryError::Transport(e))
                    if i + 1 < schemes.len() && !e.to_lowercase().contains("certificate") =>
                {
                    tracing::debug!(host = %host, error = %e, "HTTPS ping failed, trying HTTP");
                    last = Some(RegistryError::Transport(e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Transport(format!("cannot reach {host}"))))
    }

    /// `scheme://host/`.
    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn ping(&self) -> Result<()> {
        let url = self.url("v2/")?;
        match self.agent.request_url("GET", &url).call() {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(401, resp)) => {
                let c = resp.header("www-authenticate").and_then(parse_challenge);
                *lock(&self.challenge) = c;
                Ok(())
            }
            Err(ureq::Error::Status(code, _)) => Err(RegistryError::Protocol(format!(
                "{url}: the registry answered {code}; is this a registry (API v2)?"
            ))),
            Err(ureq::Error::Transport(t)) => Err(transport("GET", &url, &t)),
        }
    }

    /// Check the credentials (`login`): fetch a token with them, or ask
    /// `/v2/` with Basic auth.
    pub fn check_login(&self) -> Result<()> {
        let challenge = lock(&self.challenge).clone();
        match challenge {
            None => Ok(()),
            Some(Challenge::Basic) => {
                let url = self.url("v2/")?;
                let mut req = self.agent.request_url("GET", &url);
                if let Some(h) = self.basic() {
                    req = req.set("Authorization", &h);
                }
                match req.call() {
                    Ok(_) => Ok(()),
                    Err(ureq::Error::Status(401, _)) => Err(RegistryError::Unauthorized(
                        "unauthorized: incorrect username or password".into(),
                    )),
                    Err(ureq::Error::Status(code, r)) => Err(status_error(code, r, &url)),
                    Err(ureq::Error::Transport(t)) => Err(transport("GET", &url, &t)),
                }
            }
            Some(Challenge::Bearer { realm, service, .. }) => self
                .fetch_token(&realm, service.as_deref(), &[])
                .map(|_| ()),
        }
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .map_err(|e| RegistryError::Protocol(format!("invalid URL path {path:?}: {e}")))
    }

    fn basic(&self) -> Option<String> {
        self.creds.as_ref().map(|c| {
            let raw = format!("{}:{}", c.username, c.secret);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        })
    }

    /// The `Authorization` value for a request with these scopes.
    fn authorization(&self, scopes: &[String], fresh: bool) -> Result<Option<String>> {
        let challenge = lock(&self.challenge).clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.basic()),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = scopes.join(" ");
                if !fresh {
                    if let Some((t, until)) = lock(&self.tokens).get(&key) {
                        if Instant::now() < *until {
                            return Ok(Some(format!("Bearer {t}")));
                        }
                    }
                }
                let (token, ttl) = self.fetch_token(&realm, service.as_deref(), scopes)?;
                // Renewed a little before it expires.
                let until = Instant::now() + ttl.saturating_sub(Duration::from_secs(10));
                lock(&self.tokens).insert(key, (token.clone(), until));
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Get a token from `realm`: GET with Basic credentials (or none), or
    /// for an identity token the OAuth2 refresh-token POST.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, Duration)> {
        let mut url = Url::parse(realm).map_err(|e| {
            RegistryError::Protocol(format!("token realm {realm:?} is not a URL: {e}"))
        })?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(RegistryError::Protocol(format!(
                "token realm {realm:?} is not an HTTP(S) URL"
            )));
        }
        let result = match &self.creds {
            Some(c) if c.username == "<token>" => {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("client_id", "berth"),
                    ("refresh_token", &c.secret),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                let joined = scopes.join(" ");
                if !scopes.is_empty() {
                    form.push(("scope", &joined));
                }
                self.agent.request_url("POST", &url).send_form(&form)
            }
            creds => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scopes {
                        q.append_pair("scope", s);
                    }
                    if let Some(c) = creds {
                        q.append_pair("account", &c.username);
                    }
                }
                let mut req = self.agent.request_url("GET", &url);
                if let Some(h) = self.basic() {
                    req = req.set("Authorization", &h);
                }
                req.call()
            }
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(401 | 403, _)) => {
                return Err(RegistryError::Unauthorized(if self.creds.is_some() {
                    "unauthorized: incorrect username or password".into()
                } else {
                    "unauthorized: authentication required".into()
                }))
            }
            Err(ureq::Error::Status(code, r)) => return Err(status_error(code, r, &url)),
            Err(ureq::Error::Transport(t)) => return Err(transport("GET", &url, &t)),
        };
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body = read_limited(resp.into_reader(), 1 << 20)
            .map_err(|e| RegistryError::Protocol(format!("token from {realm}: {e}")))?;
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::Protocol(format!("token from {realm}: invalid JSON: {e}"))
        })?;
        let token = t
            .token
            .filter(|t| !t.is_empty())
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                RegistryError::Protocol(format!("token from {realm}: no token in it"))
            })?;
        let ttl = Duration::from_secs(t.expires_in.unwrap_or(60).max(60));
        Ok((token, ttl))
    }

    /// Send a request to the registry (or, without credentials, to the URL
    /// of another origin it redirected to).
    fn send(
        &self,
        method: &str,
        url: &Url,
        scopes: &[String],
        headers: &[(&str, String)],
        body: &Body<'_, '_>,
        retry: bool,
    ) -> Result<ureq::Response> {
        let same_origin = url.origin() == self.base.origin();
        let mut auth_again = same_origin;
        let mut attempt = 0u32;
        loop {
            let mut req = self.agent.request_url(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if same_origin {
                if let Some(h) = self.authorization(scopes, false)? {
                    req = req.set("Authorization", &h);
                }
            }
            let result = match body {
                Body::Empty => req.call(),
                Body::Bytes(b) => req.send_bytes(b),
                Body::Stream { open, size } => {
                    let r = open().map_err(|e| {
                        RegistryError::Protocol(format!("{method} {url}: reading the content: {e}"))
                    })?;
                    req.set("Content-Length", &size.to_string()).send(r)
                }
            };
            match result {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if auth_again => {
                    auth_again = false;
                    if let Some(c) = resp.header("www-authenticate").and_then(parse_challenge) {
                        *lock(&self.challenge) = Some(c);
                    }
                    lock(&self.tokens).remove(&scopes.join(" "));
                    if self.authorization(scopes, true)?.is_none() {
                        return Err(status_error(401, resp, url));
                    }
                }
                Err(ureq::Error::Status(code, resp))
                    if retry && (code >= 500 || code == 429) && attempt < 3 =>
                {
                    tracing::debug!(%url, code, attempt, "retrying");
                    drop(resp);
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Err(ureq::Error::Status(code, resp)) => return Err(status_error(code, resp, url)),
                Err(ureq::Error::Transport(t)) if retry && attempt < 2 => {
                    tracing::debug!(%url, error = %t, attempt, "retrying");
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Err(ureq::Error::Transport(t)) => return Err(transport(method, url, &t)),
            }
        }
    }

    /// A manifest or index by tag or digest: its bytes (at most
    /// [`manifest::MAX_MANIFEST_SIZE`]) and the `Content-Type` it came with.
    /// Pulled by digest, the bytes are checked against it.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<(Vec<u8>, Option<String>)> {
        retry_broken(|| self.get_manifest_once(repo, reference))
    }

    fn get_manifest_once(&self, repo: &str, reference: &str) -> Result<(Vec<u8>, Option<String>)> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let resp = self.send(
            "GET",
            &url,
            &[scope(repo, false)],
            &[("Accept", accept_header())],
            &Body::Empty,
            true,
        )?;
        let limit = manifest::MAX_MANIFEST_SIZE as u64;
        if resp
            .header("content-length")
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|l| l > limit)
        {
            return Err(RegistryError::Protocol(format!(
                "manifest {repo}:{reference}: larger than the limit of {limit} bytes"
            )));
        }
        let content_type = resp.header("content-type").map(String::from);
        let bytes = read_limited(resp.into_reader(), limit)
            .map_err(|e| body_error(format!("manifest {repo}:{reference}"), e))?;
        if let Ok(want) = reference.parse::<Digest>() {
            verify_bytes(&want, &bytes)?;
        }
        Ok((bytes, content_type))
    }

    /// Open a blob at `offset`, following redirects (the registry's
    /// `Authorization` only to the registry itself).
    pub fn open_blob(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<Box<dyn Read + Send>> {
        let mut url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let headers: Vec<(&str, String)> = if offset > 0 {
            vec![("Range", format!("bytes={offset}-"))]
        } else {
            Vec::new()
        };
        let scopes = [scope(repo, false)];
        let mut hops = 0;
        let resp = loop {
            let resp = self
                .send("GET", &url, &scopes, &headers, &Body::Empty, true)
                .map_err(|e| match e {
                    // Said plainly: berth sent no credentials there.
                    RegistryError::Unauthorized(_) if url.origin() != self.base.origin() => {
                        RegistryError::Unauthorized(format!(
                            "blob {digest}: the blob storage it redirected to ({}) answered 401 \
                             Unauthorized; the registry's credentials are not sent to another host",
                            url.origin().ascii_serialization()
                        ))
                    }
                    e => e,
                })?;
            if !(300..400).contains(&resp.status()) {
                break resp;
            }
            hops += 1;
            let next = resp
                .header("location")
                .ok_or_else(|| {
                    RegistryError::Protocol(format!(
                        "blob {digest}: redirect {} without a Location",
                        resp.status()
                    ))
                })
                .and_then(|l| {
                    url.join(l).map_err(|e| {
                        RegistryError::Protocol(format!("blob {digest}: bad redirect {l:?}: {e}"))
                    })
                })?;
            if hops > 5 || (next.scheme() != "https" && next.scheme() != "http") {
                return Err(RegistryError::Protocol(format!(
                    "blob {digest}: too many or invalid redirects (last to {})",
                    next.origin().ascii_serialization()
                )));
            }
            url = next;
        };
        let status = resp.status();
        if offset > 0 && status == 206 {
            let range = resp.header("content-range").unwrap_or("");
            if !range.starts_with(&format!("bytes {offset}-")) {
                return Err(RegistryError::Protocol(format!(
                    "blob {digest}: asked for bytes from {offset}, got the range {range:?}"
                )));
            }
            return Ok(Box::new(resp.into_reader()));
        }
        // A server that ignored the Range sent everything: skip what we have.
        Ok(Box::new(SkipTo {
            inner: resp.into_reader(),
            skip: offset,
        }))
    }

    /// A blob small enough to hold in memory (a config), verified.
    pub fn get_blob_bytes(&self, repo: &str, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        retry_broken(|| {
            let r = self.open_blob(repo, digest, 0)?;
            let bytes =
                read_limited(r, limit).map_err(|e| body_error(format!("blob {digest}"), e))?;
            verify_bytes(digest, &bytes)?;
            Ok(bytes)
        })
    }

    /// Whether the repository has the blob.
    pub fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        match self.send("HEAD", &url, &[scope(repo, true)], &[], &Body::Empty, true) {
            Ok(r) => Ok((200..300).contains(&r.status())),
            Err(RegistryError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Mount a blob from another repository of the same registry; whether
    /// the registry did (else the blob must be uploaded).
    pub fn mount_blob(&self, repo: &str, from: &str, digest: &Digest) -> Result<bool> {
        let mut url = self.url(&format!("v2/{repo}/blobs/uploads/"))?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let scopes = [scope(repo, true), scope(from, false)];
        match self.send("POST", &url, &scopes, &[], &Body::Empty, true) {
            Ok(r) => Ok(r.status() == 201),
            Err(RegistryError::NotFound(_) | RegistryError::Unauthorized(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Upload a blob of `size` bytes: in one PUT, or in PATCH chunks when
    /// larger than the chunk size; the whole upload is tried again on a
    /// server error or a broken connection.
    pub fn upload_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        open: &OpenFn<'_>,
    ) -> Result<()> {
        let mut attempt = 0;
        loop {
            match self.upload_once(repo, digest, size, open) {
                Ok(()) => return Ok(()),
                Err(e @ (RegistryError::Transport(_) | RegistryError::Protocol(_)))
                    if attempt < 2 =>
                {
                    tracing::debug!(%digest, error = %e, "upload failed, trying again");
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn upload_once(&self, repo: &str, digest: &Digest, size: u64, open: &OpenFn<'_>) -> Result<()> {
        let scopes = [scope(repo, true)];
        let start = self.url(&format!("v2/{repo}/blobs/uploads/"))?;
        let resp = self.send("POST", &start, &scopes, &[], &Body::Empty, true)?;
        let mut location = self.location(&start, &resp)?;
        let octets = ("Content-Type", "application/octet-stream".to_string());
        if size > self.chunk_size {
            let mut offset = 0u64;
            while offset < size {
                let len = self.chunk_size.min(size - offset);
                let chunk = move || -> std::io::Result<Box<dyn Read + Send + '_>> {
                    let mut r = open()?;
                    std::io::copy(&mut (&mut r).take(offset), &mut std::io::sink())?;
                    Ok(Box::new(r.take(len)))
                };
                let range = ("Content-Range", format!("{}-{}", offset, offset + len - 1));
                let resp = self.send(
                    "PATCH",
                    &location,
                    &scopes,
                    &[octets.clone(), range],
                    &Body::Stream {
                        open: &chunk,
                        size: len,
                    },
                    false,
                )?;
                location = self.location(&location, &resp)?;
                offset += len;
            }
            location
                .query_pairs_mut()
                .append_pair("digest", &digest.to_string());
            self.send("PUT", &location, &scopes, &[octets], &Body::Empty, false)?;
        } else {
            location
                .query_pairs_mut()
                .append_pair("digest", &digest.to_string());
            self.send(
                "PUT",
                &location,
                &scopes,
                &[octets],
                &Body::Stream { open, size },
                false,
            )?;
        }
        Ok(())
    }

    fn location(&self, base: &Url, resp: &ureq::Response) -> Result<Url> {
        let l = resp.header("location").ok_or_else(|| {
            RegistryError::Protocol(format!("{base}: upload answer without a Location"))
        })?;
        base.join(l)
            .map_err(|e| RegistryError::Protocol(format!("upload location {l:?}: {e}")))
    }

    /// The tags of a repository, following `Link` pagination.
    pub fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let mut url = self.url(&format!("v2/{repo}/tags/list"))?;
        let mut out = Vec::new();
        for _ in 0..1000 {
            let resp = self.send("GET", &url, &[scope(repo, false)], &[], &Body::Empty, true)?;
            let link = resp.header("link").map(String::from);
            let body = read_limited(resp.into_reader(), 4 << 20)
                .map_err(|e| RegistryError::Protocol(format!("tags of {repo}: {e}")))?;
            let t: Tags = serde_json::from_slice(&body).map_err(|e| {
                RegistryError::Protocol(format!("tags of {repo}: invalid JSON: {e}"))
            })?;
            out.extend(t.tags.unwrap_or_default());
            let next = link.as_deref().and_then(|l| {
                let start = l.find('<')? + 1;
                let end = l[start..].find('>')? + start;
                url.join(&l[start..end]).ok()
            });
            match next {
                Some(n) if n.origin() == self.base.origin() => url = n,
                _ => break,
            }
        }
        Ok(out)
    }

    /// PUT a manifest under a tag or its digest; returns its digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"))?;
        self.send(
            "PUT",
            &url,
            &[scope(repo, true)],
            &[("Content-Type", media_type.to_string())],
            &Body::Bytes(bytes),
            true,
        )?;
        Ok(Digest::sha256_of(bytes))
    }
}

/// A blob's content as a stream that survives a broken connection: it
/// opens the blob again at the byte it got to (an HTTP Range request; a
/// server that ignores the range sends everything and the bytes already
/// read are skipped), up to three times. It never gives more than `size`
/// bytes plus one, so an endless body is caught by the size check.
pub struct BlobReader {
    client: Arc<Client>,
    repo: String,
    digest: Digest,
    size: u64,
    pos: u64,
    inner: Option<Box<dyn Read + Send>>,
    resumes: u32,
}

impl BlobReader {
    pub fn new(client: Arc<Client>, repo: &str, digest: Digest, size: u64) -> BlobReader {
        BlobReader {
            client,
            repo: repo.to_string(),
            digest,
            size,
            pos: 0,
            inner: None,
            resumes: 0,
        }
    }

    fn open_at(&self, pos: u64) -> std::io::Result<Box<dyn Read + Send>> {
        self.client
            .open_blob(&self.repo, &self.digest, pos)
            .map_err(std::io::Error::other)
    }
}

/// Skips the first `skip` bytes of `inner`.
struct SkipTo<R> {
    inner: R,
    skip: u64,
}

impl<R: Read> Read for SkipTo<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.skip > 0 {
            let mut scratch = [0u8; 8192];
            let n = self
                .inner
                .read(&mut scratch[..(self.skip.min(8192) as usize)])?;
            if n == 0 {
                return Ok(0);
            }
            self.skip -= n as u64;
        }
        self.inner.read(buf)
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.inner.is_none() {
                self.inner = Some(self.open_at(self.pos)?);
            }
            // At most one byte past the size: enough to tell it is too long.
            let room = (self.size + 1).saturating_sub(self.pos);
            if room == 0 {
                return Ok(0);
            }
            let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            let inner = self.inner.as_mut().map(|r| r.read(&mut buf[..want]));
            let failure = match inner {
                Some(Ok(0)) if self.pos >= self.size => return Ok(0),
                Some(Ok(0)) => std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "blob {}: the connection ended after {} of {} bytes",
                        self.digest, self.pos, self.size
                    ),
                ),
                Some(Ok(n)) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Some(Err(e)) => e,
                None => continue,
            };
            if self.resumes >= 3 {
                return Err(failure);
            }
            tracing::debug!(digest = %self.digest, pos = self.pos, error = %failure, "resuming download");
            std::thread::sleep(backoff(self.resumes));
            self.resumes += 1;
            self.inner = None;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn transport(method: &str, url: &Url, t: &ureq::Transport) -> RegistryError {
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = t.message() {
        parts.push(m.to_string());
    }
    let mut source = std::error::Error::source(t);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        parts.push(t.kind().to_string());
    }
    RegistryError::Transport(format!("{method} \"{url}\": {}", parts.join(": ")))
}

/// An error answer as Docker shows it: the OCI error codes and messages
/// of its body (`manifest unknown: manifest unknown`), else the status.
fn status_error(code: u16, resp: ureq::Response, url: &Url) -> RegistryError {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<OciError>,
    }
    #[derive(serde::Deserialize)]
    struct OciError {
        code: Option<String>,
        message: Option<String>,
    }
    let status_text = resp.status_text().to_string();
    let body = read_limited(resp.into_reader(), 64 << 10).unwrap_or_default();
    let described = serde_json::from_slice::<Errors>(&body).ok().and_then(|e| {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|e| {
                let c = e
                    .code
                    .as_deref()
                    .unwrap_or("unknown")
                    .to_ascii_lowercase()
                    .replace('_', " ");
                match &e.message {
                    Some(m) if !m.is_empty() => format!("{c}: {m}"),
                    _ => c,
                }
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    });
    let msg = described.unwrap_or_else(|| match code {
        401 => "unauthorized: authentication required".to_string(),
        403 => "denied: requested access to the resource is denied".to_string(),
        _ => format!(
            "{} {} {}",
            code,
            status_text,
            url.origin().ascii_serialization() + url.path()
        ),
    });
    match code {
        401 | 403 => RegistryError::Unauthorized(msg),
        404 => RegistryError::NotFound(msg),
        _ => RegistryError::Protocol(msg),
    }
}

fn verify_bytes(want: &Digest, bytes: &[u8]) -> Result<()> {
    let mut h = berth_image::digest::Hasher::new(want.algorithm());
    h.update(bytes);
    let got = h.finish();
    if got != *want {
        return Err(RegistryError::Protocol(format!(
            "digest mismatch: expected {want}, the registry sent content of {got}"
        )));
    }
    Ok(())
}

/// Read at most `limit` bytes; more is an error (an endless or huge body,
/// `InvalidData`).
fn read_limited(r: impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the limit of {limit} bytes"),
        ));
    }
    Ok(out)
}

/// A body that could not be read: too large (refused), or a broken
/// connection (worth another try).
fn body_error(what: String, e: std::io::Error) -> RegistryError {
    if e.kind() == std::io::ErrorKind::InvalidData {
        RegistryError::Protocol(format!("{what}: {e}"))
    } else {
        RegistryError::Transport(format!("{what}: reading the answer: {e}"))
    }
}

/// Run `f` again (up to twice, after a pause) when the connection broke.
fn retry_broken<T>(f: impl Fn() -> Result<T>) -> Result<T> {
    let mut attempt = 0;
    loop {
        match f() {
            Err(RegistryError::Transport(e)) if attempt < 2 => {
                tracing::debug!(error = %e, attempt, "retrying");
                std::thread::sleep(backoff(attempt));
                attempt += 1;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u16, body: &str) -> ureq::Response {
        ureq::Response::new(code, "X", body).unwrap()
    }

    #[test]
    fn error_answers_read_as_docker_shows_them() {
        let url = Url::parse("http://r.lan:5000/v2/x/manifests/1").unwrap();
        let e = status_error(
            404,
            answer(
                404,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ),
            &url,
        );
        assert!(matches!(e, RegistryError::NotFound(_)));
        assert_eq!(e.to_string(), "manifest unknown: manifest unknown");
        let e = status_error(401, answer(401, ""), &url);
        assert!(matches!(e, RegistryError::Unauthorized(_)));
        assert_eq!(e.to_string(), "unauthorized: authentication required");
        let e = status_error(502, answer(502, "<html>bad gateway</html>"), &url);
        assert_eq!(e.to_string(), "502 X http://r.lan:5000/v2/x/manifests/1");
    }

    #[test]
    fn bodies_are_bounded_and_digests_checked() {
        assert_eq!(read_limited(&b"abc"[..], 3).unwrap(), b"abc");
        let e = read_limited(std::io::repeat(b' '), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("larger than the limit"), "{e}");
        let d = Digest::sha256_of(b"x");
        assert!(verify_bytes(&d, b"x").is_ok());
        let e = verify_bytes(&d, b"y").unwrap_err().to_string();
        assert!(e.contains("digest mismatch"), "{e}");
        assert_eq!(
            scope("library/busybox", true),
            "repository:library/busybox:pull,push"
        );
    }

    #[test]
    fn skipping_reader_drops_the_bytes_already_had() {
        let mut r = SkipTo {
            inner: &b"0123456789"[..],
            skip: 4,
        };
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "456789");
    }
}
