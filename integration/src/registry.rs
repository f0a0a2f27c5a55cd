//! A real OCI registry for pull and push tests: Debian's `docker-registry` (the CNCF
//! distribution registry) on 127.0.0.1 with filesystem storage in a temporary directory, over
//! plain HTTP or over HTTPS with a throwaway test CA and htpasswd basic auth.
//!
//! Gate tests with [`require_registry`] (it checks `docker-registry`, and `openssl` and
//! `htpasswd` for [`Registry::start_tls_auth`]).

use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::prereq::require_binary;

/// The registry binary (Debian package `docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long the registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// True when `docker-registry`, `htpasswd` (apache2-utils) and `openssl` are installed;
/// otherwise skips (or panics under `CI=true`) naming the missing one.
pub fn require_registry() -> bool {
    require_binary(REGISTRY_BIN) && require_binary("htpasswd") && require_binary("openssl")
}

/// A running `docker-registry serve`; killed on drop (its access log is printed when the test
/// is panicking).
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
    ca_pem: Option<PathBuf>,
    dir: TempDir,
}

impl Registry {
    /// A registry speaking plain HTTP, without auth.
    pub fn start_plain() -> Self {
        let dir = tempfile::tempdir().expect("registry temp dir");
        Self::start(dir, None)
    }

    /// A registry speaking HTTPS with a certificate for 127.0.0.1 signed by a fresh test CA
    /// ([`Registry::ca_pem_path`]), requiring basic auth as `user`:`pass`.
    pub fn start_tls_auth(user: &str, pass: &str) -> Self {
        let dir = tempfile::tempdir().expect("registry temp dir");
        let secure = secure_material(dir.path(), user, pass);
        Self::start(dir, Some(secure))
    }

    /// A registry speaking plain HTTP that requires basic auth as `user`:`pass` (the CRI
    /// tests reach it through a `hosts.toml` without TLS material).
    pub fn start_plain_auth(user: &str, pass: &str) -> Self {
        let dir = tempfile::tempdir().expect("registry temp dir");
        let htpasswd = dir.path().join("htpasswd");
        write_htpasswd(&htpasswd, user, pass);
        Self::start_auth(dir, None, Some(htpasswd))
    }

    fn start(dir: TempDir, secure: Option<Secure>) -> Self {
        Self::start_auth(dir, secure, None)
    }

    /// Starts the registry; `plain_htpasswd` adds basic auth without TLS.
    fn start_auth(dir: TempDir, secure: Option<Secure>, plain_htpasswd: Option<PathBuf>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let data = dir.path().join("data");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: berth-integration-test\n",
            data.display()
        );
        if let Some(s) = &secure {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                s.cert.display(),
                s.key.display(),
                s.htpasswd.display()
            ));
        }
        if let Some(htpasswd) = &plain_htpasswd {
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("write registry config");
        let log = dir.path().join("registry.log");
        let child = spawn_registry(&config_path, &log);
        let registry = Self {
            child,
            port,
            log,
            ca_pem: secure.map(|s| s.ca),
            dir,
        };
        registry.wait_listening();
        registry
    }

    /// Waits until the registry accepts connections; panics with its log after the deadline.
    fn wait_listening(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen on {}: {}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`, the registry part of references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The test CA certificate (PEM file) of a TLS registry; `None` for a plain one.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.ca_pem.as_deref()
    }

    /// The test CA certificate (PEM bytes); panics for a plain registry.
    pub fn ca_pem(&self) -> Vec<u8> {
        let path = self.ca_pem_path().expect("a TLS registry has a CA");
        fs::read(path).expect("read the test CA")
    }

    /// The registry's private directory (config, log, storage).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's log (access log lines start with `127.0.0.1 - `).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The status codes of the `GET`s of blob `digest` in `repo`, from the access log, in order.
    /// The registry logs a request when its response is complete.
    pub fn blob_gets(&self, repo: &str, digest: &str) -> Vec<u16> {
        let needle = format!("\"GET /v2/{repo}/blobs/{digest} ");
        self.log_text()
            .lines()
            .filter_map(|l| l.split_once(&needle).map(|(_, rest)| rest))
            .filter_map(|rest| {
                // `HTTP/1.1" 200 1234 ...`
                rest.split_once("\" ")
                    .and_then(|(_, tail)| tail.split_whitespace().next())
                    .and_then(|code| code.parse().ok())
            })
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The access log lines only, the last ones: enough to see what was requested.
            let text = self.log_text();
            let access: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("127.0.0.1 - "))
                .collect();
            let tail = &access[access.len().saturating_sub(40)..];
            eprintln!(
                "--- registry access log (last {}) ---\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// TLS material and credentials of a registry.
struct Secure {
    cert: PathBuf,
    key: PathBuf,
    htpasswd: PathBuf,
    ca: PathBuf,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA, a server certificate for 127.0.0.1 signed by it, and an htpasswd file for
/// `user`:`pass`, all in `dir`.
fn secure_material(dir: &Path, user: &str, pass: &str) -> Secure {
    let p = |name: &str| dir.join(name);
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=berth test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
        ])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    fs::write(
        p("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .expect("write ext.cnf");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("server.pem")));
    write_htpasswd(&p("htpasswd"), user, pass);
    Secure {
        cert: p("server.pem"),
        key: p("server.key"),
        htpasswd: p("htpasswd"),
        ca: p("ca.pem"),
    }
}

/// Writes an htpasswd file at `path` with a bcrypt entry for `user`:`pass`.
fn write_htpasswd(path: &Path, user: &str, pass: &str) {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .expect("run htpasswd");
    assert!(out.status.success(), "htpasswd failed");
    fs::write(path, &out.stdout).expect("write htpasswd");
}

/// Spawns `docker-registry serve <config>` with its output appended to `log`.
fn spawn_registry(config: &Path, log: &Path) -> Child {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open registry log");
    Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(config)
        .stdout(out.try_clone().expect("dup registry log"))
        .stderr(out)
        .spawn()
        .expect("spawn docker-registry")
}
