//! The remote API (issue 19, part 1): containerd's `[grpc] tcp_address` with `tcp_tls_cert`,
//! `tcp_tls_key` and `tcp_tls_ca`. The certificates are made here with `openssl`: a CA, a server
//! certificate for 127.0.0.1, a client certificate, one from a second CA and an expired one.
//! A client with a good certificate is served the whole API over TCP; without one, with the
//! other CA's, or with the expired one the connection is refused and berthd's log says why.
//! Half a certificate pair or an unreadable file stops start-up with a message naming it.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::berth_cli::{berth, berth_env};
use berth_integration::{
    minimal_container, namespaced, require_binary, require_root, spawn_raw, Daemon,
};
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::containers::v1::ListContainersRequest;
use berth_proto::containerd::services::version::v1::version_client::VersionClient;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tonic::transport::Endpoint;

/// How long a berthd that is expected to fail may run before it is killed.
const FAIL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for a line in berthd's log.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// openssl's settings for the test certificates.
const OPENSSL_CNF: &str = "[req]
distinguished_name = dn
prompt = no
[dn]
CN = berth-test
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
[ca]
default_ca = backdated
[backdated]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
";

/// Runs openssl in `dir`; panics with its output on failure.
#[track_caller]
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test certificates under a temporary directory: `ca.pem`, `server.{pem,key}`,
/// `client.{pem,key}` (signed by ca), `other.{pem,key}` (signed by `ca2.pem`) and
/// `expired.{pem,key}` (signed by ca, valid for one day in 2020).
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-tls-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let d = dir.path();
        fs::write(d.join("o.cnf"), OPENSSL_CNF).expect("write openssl config");
        let key = |name: &str| {
            openssl(
                d,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    &format!("{name}.key"),
                ],
            )
        };
        let csr = |name: &str| {
            key(name);
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-config",
                    "o.cnf",
                    "-key",
                    &format!("{name}.key"),
                    "-subj",
                    &format!("/CN={name}"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
        };
        for ca in ["ca", "ca2"] {
            key(ca);
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-config",
                    "o.cnf",
                    "-extensions",
                    "v3_ca",
                    "-key",
                    &format!("{ca}.key"),
                    "-subj",
                    &format!("/CN=berth test {ca}"),
                    "-days",
                    "2",
                    "-out",
                    &format!("{ca}.pem"),
                ],
            );
        }
        for (name, ca, ext) in [
            ("server", "ca", "server"),
            ("client", "ca", "client"),
            ("other", "ca2", "client"),
        ] {
            csr(name);
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    "o.cnf",
                    "-extensions",
                    ext,
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        }
        // `openssl ca` takes an explicit validity window: one day, long past.
        fs::write(d.join("index.txt"), "").expect("write index");
        fs::write(d.join("serial"), "1000\n").expect("write serial");
        csr("expired");
        openssl(
            d,
            &[
                "ca",
                "-config",
                "o.cnf",
                "-batch",
                "-notext",
                "-cert",
                "ca.pem",
                "-keyfile",
                "ca.key",
                "-in",
                "expired.csr",
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200102000000Z",
                "-extfile",
                "o.cnf",
                "-extensions",
                "client",
                "-out",
                "expired.pem",
            ],
        );
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn path_str(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf-8 path").to_owned()
    }

    /// The `[grpc]` section serving TCP on `port` with TLS and client certificates.
    fn grpc_section(&self, port: u16) -> String {
        format!(
            "[grpc]\n  tcp_address = \"127.0.0.1:{port}\"\n  tcp_tls_ca = {:?}\n  tcp_tls_cert = {:?}\n  tcp_tls_key = {:?}\n",
            self.path_str("ca.pem"),
            self.path_str("server.pem"),
            self.path_str("server.key"),
        )
    }
}

/// A TCP port free at the time of the call.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Calls Version and Containers.List over TLS on `port`, trusting `ca.pem`, presenting the
/// certificate `client` (`<client>.pem` and `<client>.key`) if given. Returns the first error.
async fn call_over_tls(certs: &Certs, port: u16, client: Option<&str>) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(certs.path("ca.pem"))
        .expect("read ca.pem")
        .map(|c| c.expect("a certificate in ca.pem"))
    {
        roots.add(der).expect("add the CA");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(certs.path(&format!("{name}.pem")))
                .expect("read the client certificate")
                .collect::<Result<Vec<_>, _>>()
                .expect("parse the client certificate");
            let key = PrivateKeyDer::from_pem_file(certs.path(&format!("{name}.key")))
                .expect("read the client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate and key match")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let channel = Endpoint::try_from(format!("http://127.0.0.1:{port}"))
        .expect("endpoint URI")
        .connect_timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
                let name = ServerName::try_from("127.0.0.1")
                    .map_err(std::io::Error::other)?
                    .to_owned();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let version = VersionClient::new(channel.clone())
        .version(())
        .await
        .map_err(|e| format!("Version: {e:?}"))?
        .into_inner();
    if version.version.is_empty() {
        return Err("Version answered no version".into());
    }
    ContainersClient::new(channel)
        .list(namespaced("default", ListContainersRequest::default()))
        .await
        .map_err(|e| format!("Containers.List: {e:?}"))?;
    Ok(())
}

/// Waits until berthd's log has a refused handshake whose line contains `reason` (lowercase
/// compared); panics with the log after [`LOG_WAIT`].
#[track_caller]
fn expect_refusal_logged(daemon: &Daemon, reason: &str, seen_before: usize) {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let log = daemon.log();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("TLS handshake refused"))
            .collect();
        if refusals
            .iter()
            .skip(seen_before)
            .any(|l| l.to_lowercase().contains(reason))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no refused handshake naming {reason:?} in berthd's log:\n{log}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// How many refused handshakes berthd has logged so far.
fn refusals(daemon: &Daemon) -> usize {
    daemon
        .log()
        .lines()
        .filter(|l| l.contains("TLS handshake refused"))
        .count()
}

fn prerequisites() -> bool {
    require_root() && require_binary("openssl")
}

/// A client certificate from the configured CA is served the API over TCP; no certificate, one
/// from another CA and an expired one are refused, and berthd logs each reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_with_client_certificates() {
    if !prerequisites() {
        return;
    }
    let certs = Certs::make();
    let port = free_port();
    let daemon = Daemon::start_with(Some(&certs.grpc_section(port)), &[]);

    call_over_tls(&certs, port, Some("client"))
        .await
        .unwrap_or_else(|e| panic!("a good client certificate was refused: {e}"));

    for (client, reason) in [
        (None, "no certificates"),
        (Some("other"), "unknownissuer"),
        (Some("expired"), "expired"),
    ] {
        let before = refusals(&daemon);
        let result = call_over_tls(&certs, port, client).await;
        assert!(
            result.is_err(),
            "berthd served a client with certificate {client:?}"
        );
        expect_refusal_logged(&daemon, reason, before);
    }

    // The unix socket still serves.
    let chan = berth_integration::channel(&daemon).await;
    VersionClient::new(chan)
        .version(())
        .await
        .expect("Version over the unix socket");
}

/// Starts berthd with `grpc` as its `[grpc]` section, expecting start-up to fail; returns its
/// stderr.
#[track_caller]
fn start_fails(grpc: &str) -> String {
    // The layout (and its removal) of a daemon never started; the run is berthd's own.
    let daemon = Daemon::prepare(Some(grpc), &[]);
    let [config, root, state, address] = [
        daemon.config_path(),
        daemon.root(),
        daemon.state(),
        daemon.address(),
    ]
    .map(|p| p.to_str().expect("utf-8 path").to_owned());
    let args = ["--config", &config, "--root", &root, "--state", &state];
    let out = spawn_raw(
        &[&args[..], &["--address", &address]].concat(),
        FAIL_TIMEOUT,
    );
    assert!(!out.timed_out, "berthd started with {grpc:?}: {out}");
    assert!(!out.success(), "berthd accepted {grpc:?}: {out}");
    out.stderr
}

/// Half a certificate pair, or a file that is missing or not PEM, stops start-up with a
/// message naming the keys or the file.
#[test]
fn bad_tls_config_is_refused_at_start() {
    if !prerequisites() {
        return;
    }
    let certs = Certs::make();
    let port = free_port();
    let cert = certs.path_str("server.pem");
    let key = certs.path_str("server.key");

    let only_cert = start_fails(&format!(
        "[grpc]\n  tcp_address = \"127.0.0.1:{port}\"\n  tcp_tls_cert = {cert:?}\n"
    ));
    assert!(
        only_cert.contains("tcp_tls_cert") && only_cert.contains("tcp_tls_key"),
        "only tcp_tls_cert: {only_cert}"
    );
    let only_key = start_fails(&format!(
        "[grpc]\n  tcp_address = \"127.0.0.1:{port}\"\n  tcp_tls_key = {key:?}\n"
    ));
    assert!(
        only_key.contains("tcp_tls_cert") && only_key.contains("tcp_tls_key"),
        "only tcp_tls_key: {only_key}"
    );

    let missing = certs.path_str("missing.pem");
    let err = start_fails(&format!(
        "[grpc]\n  tcp_address = \"127.0.0.1:{port}\"\n  tcp_tls_cert = {missing:?}\n  tcp_tls_key = {key:?}\n"
    ));
    assert!(err.contains(&missing), "missing certificate file: {err}");

    // A file that holds no certificate (the openssl config).
    let not_pem = certs.path_str("o.cnf");
    let err = start_fails(&format!(
        "[grpc]\n  tcp_address = \"127.0.0.1:{port}\"\n  tcp_tls_ca = {not_pem:?}\n  tcp_tls_cert = {cert:?}\n  tcp_tls_key = {key:?}\n"
    ));
    assert!(
        err.contains(&not_pem),
        "CA file without a certificate: {err}"
    );
}

/// `berth --address tcp://… --tlscacert --tlscert --tlskey containers ls` lists a container made
/// over the unix socket; the same with the `BERTH_TLS_*` environment; without a client
/// certificate the command fails and berthd logs why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_lists_containers_over_tcp() {
    if !prerequisites() {
        return;
    }
    let certs = Certs::make();
    let port = free_port();
    let daemon = Daemon::start_with(Some(&certs.grpc_section(port)), &[]);
    let chan = berth_integration::channel(&daemon).await;
    ContainersClient::new(chan)
        .create(namespaced("default", minimal_container("over-tcp")))
        .await
        .expect("create a container over the unix socket");

    let address = format!("tcp://127.0.0.1:{port}");
    let (ca, cert, key) = (
        certs.path_str("ca.pem"),
        certs.path_str("client.pem"),
        certs.path_str("client.key"),
    );
    let out = tokio::task::spawn_blocking({
        let (address, ca, cert, key) = (address.clone(), ca.clone(), cert.clone(), key.clone());
        move || {
            let args = ["--tlscacert", &ca, "--tlscert", &cert, "--tlskey", &key];
            berth(
                Path::new(&address),
                &[&args[..], &["containers", "ls"]].concat(),
            )
            .ok()
        }
    })
    .await
    .expect("berth");
    assert!(
        out.lines().any(|l| l.starts_with("over-tcp ")),
        "berth containers ls over TCP:\n{out}"
    );

    let before = refusals(&daemon);
    let (out, refused) = tokio::task::spawn_blocking(move || {
        let env = [
            ("BERTH_TLS_CACERT", Some(ca.as_str())),
            ("BERTH_TLS_CERT", Some(cert.as_str())),
            ("BERTH_TLS_KEY", Some(key.as_str())),
        ];
        let out = berth_env(Path::new(&address), &["containers", "ls"], b"", &env).ok();
        let refused = berth_env(Path::new(&address), &["containers", "ls"], b"", &env[..1]).fails();
        (out, refused)
    })
    .await
    .expect("berth");
    assert!(
        out.lines().any(|l| l.starts_with("over-tcp ")),
        "berth containers ls over TCP with BERTH_TLS_*:\n{out}"
    );
    assert!(
        refused.contains("cannot list containers"),
        "berth without a client certificate: {refused}"
    );
    expect_refusal_logged(&daemon, "no certificates", before);
}

/// `tcp_address` without a certificate serves plain TCP, as containerd does; `berth` reaches it
/// with `BERTH_ADDRESS`.
#[test]
fn plain_tcp_without_certificates() {
    if !require_root() {
        return;
    }
    let port = free_port();
    let daemon = Daemon::start_with(
        Some(&format!("[grpc]\n  tcp_address = \"127.0.0.1:{port}\"\n")),
        &[],
    );
    let address = format!("tcp://127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(berth_integration::berth_cli::berth_bin());
    let out = cmd
        .args(["namespaces", "ls"])
        .env("BERTH_ADDRESS", &address)
        .env_remove("CONTAINERD_ADDRESS")
        .output()
        .expect("run berth");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("NAME"),
        "berth namespaces ls at {address}: {stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
}

/// The unix sockets stay local-only beside a TCP listener: mode 0660, owner `[grpc] uid`,
/// group `[grpc] gid` (containerd's `sys.GetLocalListener` and chown), for the gRPC socket and
/// its ttrpc neighbour.
#[test]
fn unix_socket_mode_and_group_follow_the_config() {
    use std::os::unix::fs::MetadataExt;
    if !require_root() {
        return;
    }
    let port = free_port();
    let daemon = Daemon::start_with(
        Some(&format!(
            "[grpc]\n  tcp_address = \"127.0.0.1:{port}\"\n  uid = 0\n  gid = 4321\n"
        )),
        &[],
    );
    let grpc = daemon.address().to_path_buf();
    let ttrpc = PathBuf::from(format!("{}.ttrpc", grpc.display()));
    for socket in [&grpc, &ttrpc] {
        let meta = fs::metadata(socket)
            .unwrap_or_else(|e| panic!("stat {}: {e}\n{}", socket.display(), daemon.log()));
        assert_eq!(
            meta.mode() & 0o777,
            0o660,
            "mode of {}: {:o}",
            socket.display(),
            meta.mode()
        );
        assert_eq!(meta.uid(), 0, "owner of {}", socket.display());
        assert_eq!(meta.gid(), 4321, "group of {}", socket.display());
    }
}
