//! End-to-end tests for the content store, images, leases, garbage collection and events, driven
//! by the real `ctr` 1.6.20 against `berthd` (and, for export, against a real containerd too).
//!
//! Each test starts its own `berthd` on its own temporary root and socket, so they run in
//! parallel. The image is the deterministic busybox OCI archive of `berth_integration::image`.

// A file under tests/ is a test crate of its own; firecracker allows the lint the same way in
// `src/vmm/tests/integration_tests.rs`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::containerd::Containerd;
use berth_integration::image::{build_busybox_image, read_archive, sha256_digest, TestImage};
use berth_integration::{
    channel, ctr, namespaced, parse_table, require_binary, require_root, run_with_timeout,
    CmdOutput, Daemon, Row, CTR_BIN, CTR_TIMEOUT,
};
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::{
    InfoRequest, WriteAction, WriteContentRequest, WriteContentResponse,
};
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::{CreateImageRequest, Image};
use berth_proto::containerd::types::Descriptor;
use berth_wellknown::media_type;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// The namespace ctr uses when none is chosen.
const NS: &str = "default";

/// The gRPC metadata key carrying a lease id (containerd `leases/grpc.go`).
const LEASE_HEADER: &str = "containerd-lease";

/// Name of the test image in most tests.
const IMAGE: &str = "docker.io/library/bb:latest";

/// Header of `ctr images ls`.
const IMAGES_LS_HEADER: [&str; 6] = ["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"];

/// How long one of the concurrent imports may take: real containerd 1.6.20 needs up to ~110 s
/// for 20 concurrent imports of one archive (clients back off on the locked `tar-*` ingest refs).
const CONCURRENT_IMPORT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long to wait for an asynchronous effect (an event line, an active ingest).
const WAIT: Duration = Duration::from_secs(20);

/// Blob directory of the content store under a daemon root (same path in containerd).
const BLOBS_DIR: &str = "io.containerd.content.v1.content/blobs/sha256";

/// Root and `ctr`: what every test here needs.
fn prerequisites() -> bool {
    require_root() && require_binary(CTR_BIN)
}

/// Runs `ctr --address <address> <args>`, like [`ctr`] but for any socket (a real containerd).
fn ctr_at(address: &Path, args: &[&str]) -> CmdOutput {
    ctr_redirect(address, args, None, None)
}

/// Runs `ctr --address <address> <args>` through `sh` with stdin read from `stdin` and stdout
/// written to `stdout` when given (binary output cannot go through [`CmdOutput`]'s text).
fn ctr_redirect(
    address: &Path,
    args: &[&str],
    stdin: Option<&Path>,
    stdout: Option<&Path>,
) -> CmdOutput {
    run_with_timeout(ctr_command(address, args, stdin, stdout), CTR_TIMEOUT)
}

/// The command `ctr --address <address> <args>`, run by `sh` to redirect stdin from `stdin` and
/// stdout to `stdout` when given; namespace and address variables are removed.
fn ctr_command(
    address: &Path,
    args: &[&str],
    stdin: Option<&Path>,
    stdout: Option<&Path>,
) -> Command {
    let mut script = String::from(r#"exec "$0" --address "$ADDR" "$@""#);
    let mut cmd = Command::new("sh");
    if let Some(path) = stdin {
        script.push_str(r#" < "$IN""#);
        cmd.env("IN", path);
    }
    if let Some(path) = stdout {
        script.push_str(r#" > "$OUT""#);
        cmd.env("OUT", path);
    }
    cmd.arg("-c")
        .arg(script)
        .arg(CTR_BIN)
        .args(args)
        .env("ADDR", address)
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("CONTAINERD_NAMESPACE")
        .env_remove("CONTAINERD_SNAPSHOTTER");
    cmd
}

/// The rows of `ctr images ls`, checking the header.
fn images_ls(address: &Path) -> Vec<Row> {
    let out = ctr_at(address, &["images", "ls"]);
    let (header, rows) = parse_table(out.ok());
    assert_eq!(header, IMAGES_LS_HEADER, "{out}");
    rows
}

/// REF → DIGEST of `ctr images ls`.
fn image_digests(address: &Path) -> BTreeMap<String, String> {
    images_ls(address)
        .into_iter()
        .map(|r| (r["REF"].clone(), r["DIGEST"].clone()))
        .collect()
}

/// The names printed by `ctr images ls -q`.
fn image_names(address: &Path) -> BTreeSet<String> {
    let out = ctr_at(address, &["images", "ls", "-q"]);
    out.ok()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The digests listed by `ctr content ls` (a tab-separated table: the digest is the first cell).
fn content_digests(address: &Path) -> BTreeSet<String> {
    let out = ctr_at(address, &["content", "ls"]);
    let text = out.ok();
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("DIGEST"), "content ls header in:\n{out}");
    lines
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// REF → SIZE of `ctr content active` (tab-separated).
fn active_ingests(address: &Path) -> BTreeMap<String, String> {
    let out = ctr_at(address, &["content", "active"]);
    let text = out.ok();
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("REF"),
        "content active header in:\n{out}"
    );
    lines
        .filter_map(|l| {
            let mut cells = l.split('\t');
            let r = cells.next()?.trim();
            let size = cells.next().unwrap_or("").trim();
            (!r.is_empty()).then(|| (r.to_owned(), size.to_owned()))
        })
        .collect()
}

/// Number of files in the content store's `blobs/sha256` directory under `root`.
fn blob_files(root: &Path) -> usize {
    let dir = root.join(BLOBS_DIR);
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
        .count()
}

/// `ctr images import --no-unpack [extra] <archive>`, asserting success.
#[track_caller]
fn import(address: &Path, archive: &Path, extra: &[&str]) {
    let archive = archive.to_str().expect("utf-8 archive path");
    let mut args = vec!["images", "import", "--no-unpack"];
    args.extend_from_slice(extra);
    args.push(archive);
    ctr_at(address, &args).ok();
}

/// Checks `ctr images ls` shows `name` as the busybox image: an OCI manifest with the archive's
/// manifest digest for linux/amd64.
#[track_caller]
fn assert_listed(address: &Path, img: &TestImage, name: &str) {
    let rows = images_ls(address);
    let row = rows
        .iter()
        .find(|r| r["REF"] == name)
        .unwrap_or_else(|| panic!("{name} not in images ls: {rows:?}"));
    assert_eq!(row["TYPE"], media_type::OCI_MANIFEST, "{row:?}");
    assert_eq!(row["DIGEST"], img.manifest_digest, "{row:?}");
    assert_eq!(row["PLATFORMS"], "linux/amd64", "{row:?}");
}

/// Deterministic pseudo-random bytes (xorshift), so that ingested data is not in any store yet.
fn test_data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn import_lists_checks_reads_tags_and_collects_on_remove() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let addr = daemon.address();
    let img = build_busybox_image(daemon.dir(), IMAGE);

    import(addr, &img.archive, &[]);
    assert_listed(addr, &img, IMAGE);

    let out = ctr(&daemon, &["images", "check"]);
    let (header, rows) = parse_table(out.ok());
    assert_eq!(
        header,
        ["REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"],
        "{out}"
    );
    let row = rows
        .iter()
        .find(|r| r["REF"] == IMAGE)
        .unwrap_or_else(|| panic!("{IMAGE} not checked:\n{out}"));
    assert_eq!(row["STATUS"], "complete (3/3)", "{out}");
    assert_eq!(row["UNPACKED"], "false", "{out}");

    // The index blob is only held by the import lease; containerd collects it afterwards.
    let listed = content_digests(addr);
    for digest in img.image_blob_digests() {
        assert!(
            listed.contains(&digest),
            "{digest} not in content ls: {listed:?}"
        );
    }

    for layer in &img.layers {
        let out_path = daemon.dir().join("layer.out");
        ctr_redirect(
            addr,
            &["content", "get", &layer.digest],
            None,
            Some(&out_path),
        )
        .ok();
        let got = fs::read(&out_path).expect("read content get output");
        assert_eq!(got.len() as u64, layer.size, "size of {}", layer.digest);
        assert!(
            got == img.blob(&layer.digest),
            "content get {} differs from the archive blob",
            layer.digest
        );
    }

    let second = "docker.io/library/bb:second";
    ctr(&daemon, &["images", "tag", IMAGE, second]).ok();
    assert_listed(addr, &img, IMAGE);
    assert_listed(addr, &img, second);

    let out = ctr(&daemon, &["images", "rm", "--sync", IMAGE, second]);
    let removed: BTreeSet<&str> = out.ok().lines().map(str::trim).collect();
    assert_eq!(removed, BTreeSet::from([IMAGE, second]), "{out}");
    assert!(image_names(addr).is_empty(), "images left after rm");
    let listed = content_digests(addr);
    for digest in img.image_blob_digests().iter().chain([&img.index_digest]) {
        assert!(
            !listed.contains(digest),
            "{digest} still in content ls after images rm --sync: {listed:?}"
        );
    }
}

#[test]
fn export_reimports_with_identical_digests() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let img = build_busybox_image(daemon.dir(), IMAGE);
    import(daemon.address(), &img.archive, &[]);

    let exported = daemon.dir().join("export.tar");
    let exported_str = exported.to_str().expect("utf-8 path");
    ctr(&daemon, &["images", "export", exported_str, IMAGE]).ok();
    let files = read_archive(&exported);
    for name in ["oci-layout", "index.json"] {
        assert!(
            files.contains_key(name),
            "{name} not in export: {:?}",
            files.keys()
        );
    }
    for digest in img.image_blob_digests() {
        let path = format!("blobs/sha256/{}", &digest["sha256:".len()..]);
        let data = files
            .get(&path)
            .unwrap_or_else(|| panic!("{path} not in export: {:?}", files.keys()));
        assert!(data == img.blob(&digest), "exported {path} differs");
    }

    let fresh = Daemon::start();
    import(fresh.address(), &exported, &[]);
    assert_listed(fresh.address(), &img, IMAGE);
    let listed = content_digests(fresh.address());
    for digest in img.image_blob_digests() {
        assert!(
            listed.contains(&digest),
            "{digest} not re-imported: {listed:?}"
        );
    }

    // The reference: the same tar imports into containerd with the same digests.
    if !require_binary("containerd") {
        return;
    }
    let containerd = Containerd::start();
    import(containerd.address(), &exported, &[]);
    assert_eq!(
        image_digests(containerd.address()),
        image_digests(fresh.address()),
        "containerd and berthd list the re-imported image differently"
    );
    let reference = content_digests(containerd.address());
    for digest in img.image_blob_digests() {
        assert!(
            reference.contains(&digest),
            "{digest} not in containerd: {reference:?}"
        );
    }
    // Exported again by containerd, the archive has the same files with the same bytes: ctr
    // builds the tar client-side, so any difference is in what the daemons stored.
    let again = daemon.dir().join("export-containerd.tar");
    let again_str = again.to_str().expect("utf-8 path");
    ctr_at(
        containerd.address(),
        &["images", "export", again_str, IMAGE],
    )
    .ok();
    let reference_files = read_archive(&again);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        reference_files.keys().collect::<Vec<_>>(),
        "exported file lists differ"
    );
    for (name, data) in &reference_files {
        assert!(
            files[name] == *data,
            "{name} differs between the berthd and containerd exports:\n{}\n{}",
            String::from_utf8_lossy(&files[name]),
            String::from_utf8_lossy(data)
        );
    }
}

#[test]
fn ingest_verifies_and_resumes() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let addr = daemon.address();
    let data = test_data(3 << 20, 0x5eed);
    let digest = sha256_digest(&data);
    let file = daemon.dir().join("data");
    fs::write(&file, &data).expect("write the test data");
    let size = data.len().to_string();

    // A wrong expected digest fails the commit and stores nothing.
    let wrong = format!("sha256:{}", "0".repeat(64));
    ctr_redirect(
        addr,
        &[
            "content",
            "ingest",
            "--expected-digest",
            &wrong,
            "--expected-size",
            &size,
            "ref1",
        ],
        Some(&file),
        None,
    )
    .fails();
    assert!(
        !content_digests(addr).contains(&digest),
        "data committed despite a wrong expected digest"
    );

    // An ingest killed halfway stays active ...
    let mut child = Command::new(CTR_BIN)
        .arg("--address")
        .arg(addr)
        .args(["content", "ingest", "ref2"])
        .env_remove("CONTAINERD_NAMESPACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ctr content ingest");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(&data[..data.len() / 2])
        .expect("feed half the data to ctr content ingest");
    stdin.flush().expect("flush the pipe");
    let deadline = Instant::now() + WAIT;
    loop {
        let active = active_ingests(addr);
        if active.get("ref2").is_some_and(|s| s != "0B") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ref2 never became active with data: {active:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill ctr content ingest");
    child.wait().expect("reap ctr content ingest");
    drop(stdin);
    let active = active_ingests(addr);
    assert!(
        active.contains_key("ref2"),
        "ref2 not active after kill: {active:?}"
    );
    assert!(!content_digests(addr).contains(&digest));

    // ... and a second ingest on the same ref completes it.
    ctr_redirect(
        addr,
        &["content", "ingest", "--expected-digest", &digest, "ref2"],
        Some(&file),
        None,
    )
    .ok();
    assert!(
        content_digests(addr).contains(&digest),
        "resumed ingest not committed"
    );
    let active = active_ingests(addr);
    assert!(
        !active.contains_key("ref2"),
        "ref2 still active: {active:?}"
    );
}

/// Writes `data` with Content.Write (STAT, WRITE, COMMIT in one stream) under `lease` if given.
async fn write_blob(
    daemon: &Daemon,
    lease: Option<&str>,
    r#ref: &str,
    data: &[u8],
) -> Result<Vec<WriteContentResponse>, Status> {
    let total = i64::try_from(data.len()).expect("size fits i64");
    let expected = sha256_digest(data);
    let messages = vec![
        WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: r#ref.to_owned(),
            total,
            expected: expected.clone(),
            ..Default::default()
        },
        WriteContentRequest {
            action: WriteAction::Write as i32,
            data: data.to_vec(),
            ..Default::default()
        },
        WriteContentRequest {
            action: WriteAction::Commit as i32,
            total,
            offset: total,
            expected,
            ..Default::default()
        },
    ];
    send_writes(daemon, lease, messages).await
}

/// Sends `messages` as one Content.Write stream in namespace [`NS`] under `lease` if given, and
/// collects the replies.
async fn send_writes(
    daemon: &Daemon,
    lease: Option<&str>,
    messages: Vec<WriteContentRequest>,
) -> Result<Vec<WriteContentResponse>, Status> {
    let mut request = namespaced(NS, tokio_stream::iter(messages));
    if let Some(id) = lease {
        let value: MetadataValue<_> = id.parse().expect("lease id is a header value");
        request.metadata_mut().insert(LEASE_HEADER, value);
    }
    let mut client = ContentClient::new(channel(daemon).await);
    let mut stream = client.write(request).await?.into_inner();
    let mut replies = Vec::new();
    while let Some(reply) = stream.message().await? {
        replies.push(reply);
    }
    Ok(replies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_content_survives_gc_until_the_lease_is_removed() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let addr = daemon.address().to_owned();
    let img = build_busybox_image(daemon.dir(), IMAGE);
    import(&addr, &img.archive, &[]);

    let out = ctr(&daemon, &["leases", "create"]);
    let lease = out.ok().trim().to_owned();
    assert!(!lease.is_empty(), "no lease id printed:\n{out}");
    let out = ctr(&daemon, &["leases", "ls"]);
    assert!(out.ok().contains(&lease), "lease not listed:\n{out}");

    let leased = test_data(4096, 1);
    let loose = test_data(4096, 2);
    write_blob(&daemon, Some(&lease), "leased", &leased)
        .await
        .expect("Content.Write under a lease");
    write_blob(&daemon, None, "loose", &loose)
        .await
        .expect("Content.Write without a lease");
    let (leased, loose) = (sha256_digest(&leased), sha256_digest(&loose));
    // The unleased blob may already be gone: the import's lease deletion schedules a
    // collection that can run right after its commit (containerd's scheduler does the same).
    let listed = content_digests(&addr);
    assert!(listed.contains(&leased), "{listed:?}");

    // Removing an unrelated image runs a collection: the image's blobs and the unreferenced
    // blob go, the leased one stays.
    ctr(&daemon, &["images", "rm", "--sync", IMAGE]).ok();
    let listed = content_digests(&addr);
    assert!(
        listed.contains(&leased),
        "leased blob collected: {listed:?}"
    );
    assert!(
        !listed.contains(&loose),
        "unreferenced blob survived GC: {listed:?}"
    );
    assert!(
        !listed.contains(&img.manifest_digest),
        "image manifest survived GC: {listed:?}"
    );

    ctr(&daemon, &["leases", "rm", "--sync", &lease]).ok();
    let out = ctr(&daemon, &["leases", "ls"]);
    assert!(!out.ok().contains(&lease), "lease still listed:\n{out}");
    let listed = content_digests(&addr);
    assert!(
        !listed.contains(&leased),
        "blob survived the removal of its lease: {listed:?}"
    );
}

#[test]
fn events_report_image_create_and_delete() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let img = build_busybox_image(daemon.dir(), IMAGE);
    let mut child = Command::new(CTR_BIN)
        .arg("--address")
        .arg(daemon.address())
        .arg("events")
        .env_remove("CONTAINERD_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ctr events");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines: Vec<String> = Vec::new();
    // Waits until a received line satisfies `pred`, keeping every line seen.
    let wait_for = |what: &str, pred: &dyn Fn(&str) -> bool, lines: &mut Vec<String>| {
        let deadline = Instant::now() + WAIT;
        while !lines.iter().any(|l| pred(l)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(e) => panic!("no event {what} ({e:?}); got:\n{}", lines.join("\n")),
            }
        }
    };

    // Handshake: the subscription is live once an image tagged afterwards is reported (only
    // image events are relied on here). Lines seen before it are dropped.
    import(daemon.address(), &img.archive, &[]);
    let deadline = Instant::now() + WAIT;
    let mut probes = Vec::new();
    loop {
        let probe = format!("example.com/probe:{}", probes.len());
        ctr(&daemon, &["images", "tag", IMAGE, &probe]).ok();
        probes.push(probe);
        if rx.recv_timeout(Duration::from_millis(500)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "ctr events reported nothing");
    }
    while rx.recv_timeout(Duration::from_millis(200)).is_ok() {}

    let mut rm = vec!["images", "rm", "--sync", IMAGE];
    rm.extend(probes.iter().map(String::as_str));
    ctr(&daemon, &rm).ok();
    import(daemon.address(), &img.archive, &[]);
    ctr(&daemon, &["images", "rm", "--sync", IMAGE]).ok();
    let name = format!("\"name\":\"{IMAGE}\"");
    wait_for(
        "/images/create",
        &|l: &str| l.contains(" default /images/create ") && l.contains(&name),
        &mut lines,
    );
    wait_for(
        "/images/delete",
        &|l: &str| l.contains(" default /images/delete ") && l.contains(&name),
        &mut lines,
    );
    let _ = child.kill();
    let _ = child.wait();
    reader.join().expect("event reader thread");
}

#[test]
fn concurrent_imports_store_each_blob_once() {
    if !prerequisites() {
        return;
    }
    const IMPORTS: usize = 20;
    let daemon = Daemon::start();
    let addr = daemon.address();
    let img = build_busybox_image(daemon.dir(), IMAGE);
    // The archive's own name is created by the first import: concurrent first imports would
    // race on Images.Update-then-Create of that name (containerd's client fails with
    // AlreadyExists too). Each concurrent import then adds a distinct name for the index.
    import(addr, &img.archive, &[]);
    let names: Vec<String> = (0..IMPORTS)
        .map(|i| format!("example.com/concurrent/index:{i}"))
        .collect();
    let outputs: Vec<CmdOutput> = thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let archive = &img.archive;
                s.spawn(move || {
                    let args = [
                        "images",
                        "import",
                        "--no-unpack",
                        "--index-name",
                        name,
                        archive.to_str().expect("utf-8 path"),
                    ];
                    let cmd = ctr_command(addr, &args, None, None);
                    run_with_timeout(cmd, CONCURRENT_IMPORT_TIMEOUT)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("import thread"))
            .collect()
    });
    for out in &outputs {
        out.ok();
    }

    let mut expected: BTreeSet<String> = names.iter().cloned().collect();
    expected.insert(IMAGE.to_owned());
    assert_eq!(image_names(addr), expected);
    let digests = image_digests(addr);
    for name in &names {
        assert_eq!(digests[name], img.index_digest, "{name} target");
    }
    assert_eq!(digests[IMAGE], img.manifest_digest);

    let mut blobs: BTreeSet<String> = img.image_blob_digests().into_iter().collect();
    blobs.insert(img.index_digest.clone());
    assert_eq!(content_digests(addr), blobs);
    assert_eq!(
        blob_files(daemon.root()),
        blobs.len(),
        "blob files under {}",
        daemon.root().join(BLOBS_DIR).display()
    );
}

#[tokio::test]
async fn bad_input_is_invalid_argument() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();

    // Content.Write whose first message has no ref.
    let mut client = ContentClient::new(channel(&daemon).await);
    let first = WriteContentRequest {
        action: WriteAction::Stat as i32,
        ..Default::default()
    };
    let status = match client
        .write(namespaced(NS, tokio_stream::iter(vec![first])))
        .await
    {
        Err(status) => status,
        Ok(resp) => resp
            .into_inner()
            .message()
            .await
            .expect_err("Content.Write without a ref succeeded"),
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Content.Info with a digest that is not a digest (a path escape).
    let status = client
        .info(namespaced(
            NS,
            InfoRequest {
                digest: "sha256:../../etc/passwd".to_owned(),
            },
        ))
        .await
        .expect_err("Content.Info with a bad digest succeeded");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Images.Create with a zero-size target.
    let mut images = ImagesClient::new(channel(&daemon).await);
    let image = Image {
        name: "example.com/bad:size".to_owned(),
        target: Some(Descriptor {
            media_type: media_type::OCI_MANIFEST.to_owned(),
            digest: sha256_digest(b"x"),
            size: 0,
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = images
        .create(namespaced(NS, CreateImageRequest { image: Some(image) }))
        .await
        .expect_err("Images.Create with size 0 succeeded");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

/// Opens an ingest with Content.Write (STAT, then WRITE of `data`) under `lease` if given and
/// goes away without committing, as a client that failed mid-upload does.
async fn abandon_upload(daemon: &Daemon, lease: Option<&str>, r#ref: &str, data: &[u8]) {
    let messages = vec![
        WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: r#ref.to_owned(),
            total: i64::try_from(data.len() * 2).expect("size fits i64"),
            ..Default::default()
        },
        WriteContentRequest {
            action: WriteAction::Write as i32,
            data: data.to_vec(),
            ..Default::default()
        },
    ];
    send_writes(daemon, lease, messages)
        .await
        .expect("Content.Write takes the partial upload");
}

/// Bytes in the content store's ingest directory under `root`.
fn ingest_bytes(root: &Path) -> u64 {
    let dir = root.join("io.containerd.content.v1.content/ingest");
    let mut total = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display())) {
        let path = entry.expect("ingest entry").path();
        if let Ok(data) = fs::metadata(path.join("data")) {
            total += data.len();
        }
    }
    total
}

/// Waits up to `limit` for `ctr content active` to list nothing and the ingest directory to hold
/// no data; returns how long that took.
#[track_caller]
fn wait_for_no_ingests(daemon: &Daemon, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let active = active_ingests(daemon.address());
        let bytes = ingest_bytes(daemon.root());
        if active.is_empty() && bytes == 0 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "after {limit:?} ingests still hold {bytes} bytes: {active:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_upload_frees_its_space_soon_after_its_lease_goes() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start();
    let out = ctr(&daemon, &["leases", "create"]);
    let lease = out.ok().trim().to_owned();
    let data = test_data(1 << 20, 3);
    abandon_upload(&daemon, Some(&lease), "upload-1", &data).await;
    // The lease holds the partial upload, however long nobody writes it.
    thread::sleep(Duration::from_millis(1500));
    let active = active_ingests(daemon.address());
    assert!(active.contains_key("upload-1"), "{active:?}");
    assert_eq!(ingest_bytes(daemon.root()), 1 << 20);
    // The client's lease goes (`ctr` deletes its lease when an import fails): the bytes go
    // within seconds, without any other deletion (containerd aborts the ingest at the
    // collection the lease removal starts).
    ctr(&daemon, &["leases", "rm", &lease]).ok();
    let took = wait_for_no_ingests(&daemon, Duration::from_secs(5));
    eprintln!("leased ingest gone {took:?} after its lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_unleased_upload_expires_after_ingest_expiry() {
    if !prerequisites() {
        return;
    }
    let daemon = Daemon::start_with(
        Some("[plugins.\"io.containerd.gc.v1.scheduler\"]\ningest_expiry = \"2s\"\n"),
        &[],
    );
    abandon_upload(&daemon, None, "upload-2", &test_data(1 << 20, 4)).await;
    let active = active_ingests(daemon.address());
    assert!(active.contains_key("upload-2"), "{active:?}");
    // Nothing else happens on the daemon: the collector notices the ingest by itself and
    // removes it once it has not been written for two seconds.
    let took = wait_for_no_ingests(&daemon, Duration::from_secs(8));
    assert!(
        took >= Duration::from_millis(1500),
        "removed too early: {took:?}"
    );
}
