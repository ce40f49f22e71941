//! Test servers: Debian's docker-registry (plain HTTP, or TLS with a CA
//! made here and htpasswd auth), and a tiny hand-written HTTP server for
//! hostile answers. Each is killed/stopped when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn must(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    pub port: u16,
    /// With TLS: the CA certificate that signed the server's.
    pub ca: Option<PathBuf>,
}

impl Registry {
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A plain-HTTP registry.
    pub fn plain() -> Registry {
        Registry::start(false)
    }

    /// A TLS registry with htpasswd auth for `tester`/`s3cret`.
    pub fn tls_auth() -> Registry {
        Registry::start(true)
    }

    fn start(tls: bool) -> Registry {
        assert!(
            Path::new("/usr/bin/docker-registry").exists(),
            "these tests need Debian's docker-registry (scripts/setup.sh installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut extra = String::new();
        let mut ca = None;
        if tls {
            let o = |p: &str| d.join(p).to_str().unwrap().to_string();
            must(Command::new("openssl").args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=berth test CA",
                "-keyout",
                &o("ca.key"),
                "-out",
                &o("ca.crt"),
            ]));
            std::fs::write(
                d.join("ext.cnf"),
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
            )
            .unwrap();
            must(Command::new("openssl").args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                &o("server.key"),
                "-out",
                &o("server.csr"),
            ]));
            must(Command::new("openssl").args([
                "x509",
                "-req",
                "-in",
                &o("server.csr"),
                "-CA",
                &o("ca.crt"),
                "-CAkey",
                &o("ca.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &o("ext.cnf"),
                "-out",
                &o("server.crt"),
            ]));
            let h = Command::new("htpasswd")
                .args(["-Bbn", "tester", "s3cret"])
                .output()
                .expect("htpasswd (apache2-utils) is installed");
            assert!(h.status.success());
            std::fs::write(d.join("htpasswd"), &h.stdout).unwrap();
            extra = format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                o("server.crt"),
                o("server.key"),
                o("htpasswd")
            );
            ca = Some(d.join("ca.crt"));
        }
        // A port taken between free_port() and the bind is retried.
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                d.join("data").display()
            );
            std::fs::write(d.join("config.yml"), config).unwrap();
            let mut child = Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(d.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join("registry.log")).unwrap())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Registry {
                        child,
                        _dir: dir,
                        port,
                        ca,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "docker-registry did not start: {}",
            std::fs::read_to_string(d.join("registry.log")).unwrap_or_default()
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request as the hostile server saw it.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub enum Answer {
    /// Status, headers, body.
    Full(u16, Vec<(String, String)>, Vec<u8>),
    /// Headers with a Content-Length, then only the first `n` body bytes
    /// and the connection closes.
    Cut(u16, Vec<(String, String)>, Vec<u8>, usize),
    /// Headers without a length, then bytes for ever.
    Endless(u16, Vec<(String, String)>),
    /// Never answer.
    Hang,
}

pub type Handler = dyn Fn(&Request) -> Answer + Send + Sync;

/// A tiny HTTP/1.1 server (one request per connection) answering with
/// `handler`; it records every request.
pub struct Hostile {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    pub fn start(handler: Box<Handler>) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::from(handler);
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (seen, handler, stop) = (seen.clone(), handler.clone(), stop.clone());
                    std::thread::spawn(move || serve(conn, &seen, &*handler, &stop));
                }
            });
        }
        Hostile { port, seen, stop }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, seen: &Mutex<Vec<Request>>, handler: &Handler, stop: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    let req = Request {
        method,
        path,
        headers,
    };
    seen.lock().unwrap().push(req.clone());
    let mut out = conn;
    let head = |status: u16, headers: &[(String, String)], len: Option<usize>| {
        let mut s = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
        for (k, v) in headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(l) = len {
            s.push_str(&format!("Content-Length: {l}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    };
    match handler(&req) {
        Answer::Full(status, h, body) => {
            let _ = out.write_all(&head(status, &h, Some(body.len())));
            let _ = out.write_all(&body);
        }
        Answer::Cut(status, h, body, n) => {
            let _ = out.write_all(&head(status, &h, Some(body.len())));
            let _ = out.write_all(&body[..n]);
        }
        Answer::Endless(status, h) => {
            let _ = out.write_all(&head(status, &h, None));
            let chunk = vec![b' '; 64 << 10];
            while !stop.load(Ordering::Relaxed) && out.write_all(&chunk).is_ok() {}
        }
        Answer::Hang => {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let _ = out.flush();
}

pub fn json_headers(ct: &str) -> Vec<(String, String)> {
    vec![("Content-Type".to_string(), ct.to_string())]
}
