//! End-to-end tests of `berth volumes`, the volume flags of `berth run` (`-v`, `--mount
//! type=volume`, `--volumes-from`, image `Volumes`), `berth ps` and `berth inspect`, against a
//! real `berthd` with runc and the busybox test image.

// A file under tests/ is a test crate of its own (see cli_run.rs).
#![allow(clippy::tests_outside_test_module)]

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use berth_integration::berth_cli::{berth, import_archive, RemoveContainers, Run};
use berth_integration::image::{build_busybox_image, read_archive, sha256_digest, TestImage};
use berth_integration::{require_binary, require_root, Daemon};
use berth_wellknown::{annotation, media_type};
use serde_json::{json, Value};

const IMAGE: &str = "docker.io/library/bb:latest";

/// A container id unique to this test process (runc's state directory is host-global).
fn uid(base: &str) -> String {
    format!("{base}-{}", std::process::id())
}

fn import(a: &Path, img: &TestImage) {
    import_archive(a, &img.archive, &[]);
}

/// The daemon's volume directory of namespace `default`.
fn store(daemon: &Daemon) -> PathBuf {
    daemon.root().join("berth/volumes/default")
}

/// Names in `berth volumes ls -q`.
fn volume_names(a: &Path) -> Vec<String> {
    berth(a, &["volumes", "ls", "-q"])
        .ok()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn is_hex64(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `berth ps --format json` (with `extra` flags), one object a line.
fn ps_json(a: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["ps", "--format", "json"];
    args.extend_from_slice(extra);
    berth(a, &args)
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits until `berth inspect` shows container `id` in Docker state `state`.
#[track_caller]
fn wait_state(a: &Path, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = berth(a, &["inspect", id]).json();
        if v[0]["State"]["Status"] == state {
            return v[0].clone();
        }
        assert!(Instant::now() < deadline, "{id} never became {state}: {v}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// A gzip stream of `data`.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip into memory");
    enc.finish().expect("finish gzip")
}

/// The busybox image plus a layer with `data/` (owned 1000:1000, mode 0750) holding `seed`
/// (1000:1000, 0600), and `volumes` as the config's `Volumes`, written as an OCI layout tar
/// named `name`. (Built here rather than in the harness: only these tests need image
/// `Volumes`.)
fn image_with_volumes(dir: &Path, name: &str, volumes: &[&str]) -> PathBuf {
    let sub = dir.join(format!("img-{}", volumes.len() + name.len()));
    fs::create_dir_all(&sub).expect("mkdir");
    let base = build_busybox_image(&sub, IMAGE);
    let mut layer = tar::Builder::new(Vec::new());
    let entry = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        h.set_size(size);
        h
    };
    let mut h = entry(tar::EntryType::Directory, 0o750, 0);
    layer
        .append_data(&mut h, "data/", &[][..])
        .expect("tar dir");
    let mut h = entry(tar::EntryType::Regular, 0o600, 5);
    layer
        .append_data(&mut h, "data/seed", &b"seed\n"[..])
        .expect("tar file");
    let tar = layer.into_inner().expect("finish tar");
    let gz = gzip(&tar);
    let (layer_digest, diff_id) = (sha256_digest(&gz), sha256_digest(&tar));

    let mut config: Value =
        serde_json::from_slice(base.blob(&base.config_digest)).expect("config JSON");
    let vols: serde_json::Map<String, Value> = volumes
        .iter()
        .map(|v| ((*v).to_owned(), json!({})))
        .collect();
    config["config"]["Volumes"] = Value::Object(vols);
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("diff_ids")
        .push(json!(diff_id));
    let config = serde_json::to_vec(&config).expect("config");
    let config_digest = sha256_digest(&config);
    let mut manifest: Value =
        serde_json::from_slice(base.blob(&base.manifest_digest)).expect("manifest JSON");
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config.len());
    manifest["layers"].as_array_mut().expect("layers").push(
        json!({"mediaType": media_type::OCI_LAYER_GZIP, "digest": layer_digest, "size": gz.len()}),
    );
    let manifest = serde_json::to_vec(&manifest).expect("manifest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [{
            "mediaType": media_type::OCI_MANIFEST,
            "digest": sha256_digest(&manifest),
            "size": manifest.len(),
            "annotations": {(annotation::IMAGE_NAME): name, (annotation::REF_NAME): "latest"},
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }))
    .expect("index");

    let path = sub.join("volumes-image.tar");
    let mut out = tar::Builder::new(fs::File::create(&path).expect("create archive"));
    let mut add = |p: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        out.append_data(&mut h, p, data).expect("append");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    let mut blobs: Vec<(String, Vec<u8>)> = base
        .layers
        .iter()
        .map(|l| (l.digest.clone(), base.blob(&l.digest).to_vec()))
        .collect();
    blobs.push((layer_digest, gz));
    blobs.push((config_digest, config));
    blobs.push((sha256_digest(&manifest), manifest));
    for (digest, data) in &blobs {
        add(&format!("blobs/sha256/{}", &digest[7..]), data);
    }
    out.into_inner().expect("finish archive");
    path
}

#[track_caller]
fn fails_with(r: Run, text: &str) {
    let err = r.fails();
    assert!(err.contains(text), "want {text:?} in: {err}");
}

#[test]
fn named_volume_is_shared_outlives_containers_and_is_refused_while_used() {
    if !require_root() || !require_binary("runc") {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    import(a, &build_busybox_image(daemon.dir(), IMAGE));
    let [w, r, ro, holder, m] = ["nv-w", "nv-r", "nv-ro", "nv-hold", "nv-m"].map(uid);
    let _cleanup = RemoveContainers {
        address: a,
        ids: vec![w.clone(), r.clone(), ro.clone(), holder.clone(), m.clone()],
    };

    berth(a, &["volumes", "create", "--label", "team=db", "shared"]).ok();
    berth(
        a,
        &[
            "run",
            "--rm",
            "-v",
            "shared:/data",
            IMAGE,
            &w,
            "sh",
            "-c",
            "echo written > /data/f",
        ],
    )
    .ok();
    let out = berth(
        a,
        &[
            "run",
            "--rm",
            "-v",
            "shared:/srv:ro",
            IMAGE,
            &r,
            "cat",
            "/srv/f",
        ],
    )
    .ok();
    assert_eq!(out, "written\n");
    // :ro is read-only.
    let denied = berth(
        a,
        &[
            "run",
            "--rm",
            "-v",
            "shared:/srv:ro",
            IMAGE,
            &ro,
            "sh",
            "-c",
            "echo x > /srv/g",
        ],
    );
    assert_ne!(denied.code, 0, "{denied:?}");
    // The volume outlives both containers, with its data on the daemon's root.
    assert_eq!(volume_names(a), ["shared"]);
    let data = store(&daemon).join("shared/_data");
    assert_eq!(fs::read_to_string(data.join("f")).unwrap(), "written\n");
    let info = berth(a, &["volumes", "inspect", "shared"]).json();
    assert_eq!(info[0]["Name"], "shared");
    assert_eq!(info[0]["Driver"], "local");
    assert_eq!(info[0]["Labels"]["team"], "db");
    assert_eq!(info[0]["Mountpoint"], data.to_str().unwrap());

    // In use by a container (running or not): refused, naming it; the data stays.
    berth(
        a,
        &[
            "run",
            "-d",
            "-v",
            "shared:/data",
            IMAGE,
            &holder,
            "sleep",
            "300",
        ],
    )
    .ok();
    fails_with(
        berth(a, &["volumes", "rm", "shared"]),
        &format!("cannot remove volume \"shared\": volume is in use by container(s) {holder}"),
    );
    berth(a, &["volumes", "prune", "--all"]).ok();
    assert!(data.join("f").is_file());

    // `--mount type=volume` makes and mounts a named volume too.
    let out = berth(
        a,
        &[
            "run",
            "--rm",
            "--mount",
            "type=volume,src=second,dst=/m",
            IMAGE,
            &m,
            "sh",
            "-c",
            "echo ok > /m/x && cat /m/x",
        ],
    )
    .ok();
    assert_eq!(out, "ok\n");
    assert_eq!(volume_names(a), ["second", "shared"]);

    berth(a, &["tasks", "kill", "-s", "KILL", &holder]).ok();
    wait_state(a, &holder, "exited");
    berth(a, &["tasks", "delete", &holder]).ok();
    berth(a, &["containers", "rm", &holder]).ok();
    // Named volumes survive a plain prune; --all takes the unused ones.
    assert_eq!(berth(a, &["volumes", "prune"]).ok(), "");
    assert_eq!(volume_names(a), ["second", "shared"]);
    berth(a, &["volumes", "rm", "second"]).ok();
    assert_eq!(berth(a, &["volumes", "prune", "--all"]).ok(), "shared\n");
    assert!(volume_names(a).is_empty());
    assert!(!store(&daemon).join("shared").exists());
    fails_with(
        berth(a, &["volumes", "rm", "shared"]),
        "volume \"shared\" not found",
    );
    berth(a, &["volumes", "rm", "-f", "shared"]).ok();
}

#[test]
fn volumes_from_backup_round_trips_a_tar() {
    if !require_root() || !require_binary("runc") {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    import(a, &build_busybox_image(daemon.dir(), IMAGE));
    let [data, fill, bk, data2, rs, chk, ro] = [
        "vf-data", "vf-fill", "vf-bk", "vf-data2", "vf-rs", "vf-chk", "vf-ro",
    ]
    .map(uid);
    let _cleanup = RemoveContainers {
        address: a,
        ids: vec![
            data.clone(),
            data2.clone(),
            fill.clone(),
            bk.clone(),
            rs.clone(),
        ],
    };
    let backup = daemon.dir().join("backup");
    let backup_mount = format!("{}:/backup", backup.display());

    // A data container with an anonymous volume, filled through --volumes-from.
    berth(
        a,
        &[
            "containers",
            "create",
            "-v",
            "/dbdata",
            IMAGE,
            &data,
            "true",
        ],
    )
    .ok();
    berth(
        a,
        &[
            "run",
            "--rm",
            "--volumes-from",
            &data,
            IMAGE,
            &fill,
            "sh",
            "-c",
            "echo payload > /dbdata/file",
        ],
    )
    .ok();
    // --volumes-from NAME:ro mounts it read-only.
    let denied = berth(
        a,
        &[
            "run",
            "--rm",
            "--volumes-from",
            &format!("{data}:ro"),
            IMAGE,
            &ro,
            "sh",
            "-c",
            "echo x > /dbdata/other",
        ],
    );
    assert_ne!(denied.code, 0, "{denied:?}");

    // The seeds' backup: tar the volume into a host directory (made by -v).
    berth(
        a,
        &[
            "run",
            "--rm",
            "--volumes-from",
            &data,
            "-v",
            &backup_mount,
            IMAGE,
            &bk,
            "busybox",
            "tar",
            "cvf",
            "/backup/backup.tar",
            "/dbdata",
        ],
    )
    .ok();
    let files = read_archive(&backup.join("backup.tar"));
    assert_eq!(
        files.get("dbdata/file").map(Vec::as_slice),
        Some(&b"payload\n"[..])
    );

    // Restore into a new data container and read it back.
    berth(
        a,
        &[
            "containers",
            "create",
            "-v",
            "/dbdata",
            IMAGE,
            &data2,
            "true",
        ],
    )
    .ok();
    berth(
        a,
        &[
            "run",
            "--rm",
            "--volumes-from",
            &data2,
            "-v",
            &backup_mount,
            IMAGE,
            &rs,
            "sh",
            "-c",
            "cd / && busybox tar xvf /backup/backup.tar",
        ],
    )
    .ok();
    let out = berth(
        a,
        &[
            "run",
            "--rm",
            "--volumes-from",
            &data2,
            IMAGE,
            &chk,
            "cat",
            "/dbdata/file",
        ],
    )
    .ok();
    assert_eq!(out, "payload\n");

    // Two different anonymous volumes, each kept by its data container.
    let one = berth(a, &["inspect", &data]).json();
    let two = berth(a, &["inspect", &data2]).json();
    let (v1, v2) = (&one[0]["Mounts"][0], &two[0]["Mounts"][0]);
    assert_eq!(v1["Type"], "volume", "{one}");
    assert_eq!(v1["Destination"], "/dbdata");
    assert_ne!(v1["Name"], v2["Name"]);
    assert!(is_hex64(v1["Name"].as_str().unwrap()), "{v1}");
    assert_eq!(one[0]["AnonymousVolumes"][0], v1["Name"]);
    assert_eq!(volume_names(a).len(), 2);
    // A prune keeps them while the containers exist; after the containers go it takes them.
    assert_eq!(berth(a, &["volumes", "prune"]).ok(), "");
    berth(a, &["containers", "rm", &data, &data2]).ok();
    let pruned = berth(a, &["volumes", "prune"]).ok();
    assert_eq!(pruned.lines().count(), 2, "{pruned}");
    assert!(volume_names(a).is_empty());
}

#[test]
fn new_volumes_get_the_image_content_and_image_volumes_are_anonymous() {
    if !require_root() || !require_binary("runc") {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    import(a, &build_busybox_image(daemon.dir(), IMAGE));
    let vimage = "docker.io/library/bbvol:latest";
    let archive = image_with_volumes(daemon.dir(), vimage, &["/data"]);
    berth(a, &["images", "import", archive.to_str().unwrap()]).ok();
    let [cu, cu2, an, anrm, own] = ["cu-1", "cu-2", "cu-an", "cu-anrm", "cu-own"].map(uid);
    let _cleanup = RemoveContainers {
        address: a,
        ids: vec![
            cu.clone(),
            cu2.clone(),
            an.clone(),
            anrm.clone(),
            own.clone(),
        ],
    };

    // Copy-up: a new named volume on /etc starts with the image's /etc.
    let out = berth(
        a,
        &[
            "run",
            "--rm",
            "-v",
            "etcvol:/etc",
            IMAGE,
            &cu,
            "cat",
            "/etc/hello",
        ],
    )
    .ok();
    assert_eq!(out, "hello from layer 2\n");
    let data = store(&daemon).join("etcvol/_data");
    let hello = fs::metadata(data.join("hello")).unwrap();
    assert_eq!(hello.mode() & 0o7777, 0o644);
    assert!(data.join("passwd").is_file());
    // Not again once the volume has content: a removed file stays removed.
    fs::remove_file(data.join("hello")).unwrap();
    let r = berth(
        a,
        &[
            "run",
            "--rm",
            "-v",
            "etcvol:/etc",
            IMAGE,
            &cu2,
            "ls",
            "/etc",
        ],
    )
    .ok();
    assert!(!r.contains("hello"), "{r}");
    assert!(r.contains("passwd"), "{r}");

    // Copy-up keeps owners and modes (the image's /data is 1000:1000 0750, seed 0600), and the
    // image's Volumes entry became an anonymous volume.
    let out = berth(
        a,
        &[
            "run",
            vimage,
            &an,
            "busybox",
            "stat",
            "-c",
            "%u:%g %a %n",
            "/data",
            "/data/seed",
        ],
    )
    .ok();
    assert_eq!(out, "1000:1000 750 /data\n1000:1000 600 /data/seed\n");
    let names = volume_names(a);
    let anon: Vec<&String> = names.iter().filter(|n| is_hex64(n)).collect();
    assert_eq!(anon.len(), 1, "{names:?}");
    let anon = anon[0].clone();
    let info = berth(a, &["volumes", "inspect", &anon]).json();
    assert_eq!(
        info[0]["Labels"]["com.docker.volume.anonymous"], "",
        "{info}"
    );
    assert_eq!(
        fs::read_to_string(store(&daemon).join(&anon).join("_data/seed")).unwrap(),
        "seed\n"
    );
    // The user's mount wins over the image's Volumes entry: no anonymous volume then.
    berth(
        a,
        &["run", "--rm", "-v", "owned:/data", vimage, &own, "true"],
    )
    .ok();
    assert_eq!(volume_names(a).iter().filter(|n| is_hex64(n)).count(), 1);
    assert_eq!(
        fs::read_to_string(store(&daemon).join("owned/_data/seed")).unwrap(),
        "seed\n",
        "copy-up into a new named volume"
    );
    // In use by the stopped container: refused.
    fails_with(
        berth(a, &["volumes", "rm", &anon]),
        "is in use by container(s)",
    );
    // --rm takes its anonymous volume along.
    berth(a, &["run", "--rm", vimage, &anrm, "ls", "/data"]).ok();
    assert_eq!(volume_names(a).iter().filter(|n| is_hex64(n)).count(), 1);

    berth(a, &["containers", "rm", &an]).ok();
    assert_eq!(berth(a, &["volumes", "prune"]).ok(), format!("{anon}\n"));
    let mut left = volume_names(a);
    left.sort();
    assert_eq!(left, ["etcvol", "owned"]);
}

#[test]
fn bad_names_and_paths_make_nothing() {
    if !require_root() || !require_binary("runc") {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    import(a, &build_busybox_image(daemon.dir(), IMAGE));
    let bad_image = "docker.io/library/bbdots:latest";
    let archive = image_with_volumes(daemon.dir(), bad_image, &["/data/../../etc"]);
    berth(a, &["images", "import", archive.to_str().unwrap()]).ok();
    let [c1, c2, c3] = ["bn-1", "bn-2", "bn-3"].map(uid);
    let _cleanup = RemoveContainers {
        address: a,
        ids: vec![c1.clone(), c2.clone(), c3.clone()],
    };

    for bad in ["a/b", "..", "../x"] {
        fails_with(
            berth(a, &["volumes", "create", bad]),
            &format!("invalid volume name {bad:?}"),
        );
        fails_with(
            berth(
                a,
                &[
                    "run",
                    "--rm",
                    "-v",
                    &format!("{bad}:/x"),
                    IMAGE,
                    &c1,
                    "true",
                ],
            ),
            &format!("invalid volume name {bad:?}"),
        );
        fails_with(
            berth(
                a,
                &[
                    "run",
                    "--rm",
                    "--mount",
                    &format!("type=volume,src={bad},dst=/x"),
                    IMAGE,
                    &c1,
                    "true",
                ],
            ),
            &format!("invalid volume name {bad:?}"),
        );
        fails_with(berth(a, &["volumes", "rm", bad]), "invalid volume name");
    }
    fails_with(
        berth(a, &["run", "--rm", "-v", "ok:/a/../b", IMAGE, &c2, "true"]),
        "\"..\" is not allowed",
    );
    fails_with(
        berth(
            a,
            &[
                "run", "--rm", "-v", "ok:/x", "-v", "ok2:/x", IMAGE, &c2, "true",
            ],
        ),
        "duplicate mount point: /x",
    );
    fails_with(
        berth(
            a,
            &[
                "run",
                "--rm",
                "--volumes-from",
                "nosuch",
                IMAGE,
                &c2,
                "true",
            ],
        ),
        "container \"nosuch\" not found",
    );
    // An image whose Volumes path climbs out: refused before anything is made.
    fails_with(
        berth(a, &["run", "--rm", bad_image, &c3, "true"]),
        "invalid image volume \"/data/../../etc\"",
    );
    assert!(volume_names(a).is_empty());
    assert_eq!(berth(a, &["containers", "ls", "-q"]).ok(), "");
    let snaps = berth(a, &["snapshots", "ls"]).ok();
    assert!(!snaps.contains(&c3) && !snaps.contains(&c1), "{snaps}");
    let entries: Vec<_> = fs::read_dir(store(&daemon)).unwrap().collect();
    assert!(entries.is_empty(), "{entries:?}");
    assert!(!daemon.root().join("berth/volumes/x").exists());
    assert!(!daemon.root().join("berth/x").exists());

    // A container that cannot be created (its id is taken) leaves no volume or host directory.
    berth(a, &["containers", "create", IMAGE, &c2, "true"]).ok();
    let host = daemon.dir().join("never/made");
    let taken = berth(
        a,
        &[
            "run",
            "--rm",
            "-v",
            "fresh:/f",
            "-v",
            "/anon",
            "-v",
            &format!("{}:/h", host.display()),
            IMAGE,
            &c2,
            "true",
        ],
    );
    fails_with(taken, "already exists");
    assert!(volume_names(a).is_empty());
    assert!(!daemon.dir().join("never").exists());
    berth(a, &["containers", "rm", &c2]).ok();
}

#[test]
fn ps_and_inspect_summarise_containers() {
    if !require_root() || !require_binary("runc") {
        return;
    }
    let daemon = Daemon::start();
    let a = daemon.address();
    import(a, &build_busybox_image(daemon.dir(), IMAGE));
    let [up, ex, created, created2] = ["ps-up", "ps-ex", "ps-new", "ps-new2"].map(uid);
    let _cleanup = RemoveContainers {
        address: a,
        ids: vec![up.clone(), ex.clone(), created.clone(), created2.clone()],
    };
    let host = daemon.dir().join("hostdir");
    fs::create_dir(&host).unwrap();
    let bind = format!("{}:/h:ro", host.display());

    berth(
        a,
        &[
            "run", "-d", "-v", "pv:/data", "-v", &bind, IMAGE, &up, "sleep", "300",
        ],
    )
    .ok();
    berth(a, &["run", "-d", IMAGE, &ex, "sh", "-c", "exit 3"]).ok();
    berth(a, &["containers", "create", IMAGE, &created, "true"]).ok();
    let running = wait_state(a, &up, "running");
    wait_state(a, &ex, "exited");

    // Default: running containers only; -a: all, with Docker's status words.
    let table = berth(a, &["ps"]).ok();
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
        "RESTARTS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(rows[0].starts_with(&up), "{table}");
    assert!(rows[0].contains(" Up "), "{table}");
    assert!(rows[0].contains("\"sleep 300\""), "{table}");
    assert_eq!(berth(a, &["ps", "-q"]).ok(), format!("{up}\n"));

    let all = ps_json(a, &["--all"]);
    assert_eq!(all.len(), 3, "{all:?}");
    let find = |id: &str| {
        all.iter()
            .find(|v| v["ID"] == id)
            .unwrap_or_else(|| panic!("{id}"))
    };
    assert_eq!(find(&up)["State"], "running");
    assert!(find(&up)["Status"].as_str().unwrap().starts_with("Up"));
    assert_eq!(find(&up)["Image"], IMAGE);
    assert_eq!(find(&up)["Restarts"], 0);
    assert_eq!(find(&ex)["State"], "exited");
    let status = find(&ex)["Status"].as_str().unwrap();
    assert!(
        status.starts_with("Exited (3) ") && status.ends_with(" ago"),
        "{status}"
    );
    assert_eq!(find(&created)["Status"], "Created");
    let table = berth(a, &["ps", "--all"]).ok();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&ex) && l.contains("Exited (3)")),
        "{table}"
    );

    // inspect: state, pid, mounts with volume names.
    assert_eq!(running["Id"], up.as_str());
    assert_eq!(running["Image"], IMAGE);
    assert!(running["State"]["Pid"].as_u64().unwrap() > 0, "{running}");
    assert_eq!(running["State"]["Running"], true);
    assert_eq!(running["Path"], "sleep");
    assert_eq!(running["HostConfig"]["RestartPolicy"]["Name"], "no");
    let mounts = running["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 2, "{running}");
    let vol = mounts.iter().find(|m| m["Destination"] == "/data").unwrap();
    assert_eq!(vol["Type"], "volume");
    assert_eq!(vol["Name"], "pv");
    assert_eq!(vol["RW"], true);
    assert_eq!(
        vol["Source"],
        store(&daemon).join("pv/_data").to_str().unwrap()
    );
    let hb = mounts.iter().find(|m| m["Destination"] == "/h").unwrap();
    assert_eq!(hb["Type"], "bind");
    assert_eq!(hb["Source"], host.to_str().unwrap());
    assert_eq!(hb["RW"], false);
    // Volumes are per namespace.
    assert_eq!(berth(a, &["-n", "other", "volumes", "ls", "-q"]).ok(), "");
    assert_eq!(berth(a, &["volumes", "ls", "-q"]).ok(), "pv\n");
    // ctr's own --mount form still works, and is recorded as a bind mount.
    let ctr_mount = format!("type=bind,src={},dst=/c,options=rbind:ro", host.display());
    berth(
        a,
        &[
            "containers",
            "create",
            "--mount",
            &ctr_mount,
            IMAGE,
            &created2,
            "true",
        ],
    )
    .ok();
    let c2 = berth(a, &["inspect", &created2]).json();
    assert_eq!(c2[0]["Mounts"][0]["Type"], "bind", "{c2}");
    assert_eq!(c2[0]["Mounts"][0]["Destination"], "/c");
    assert_eq!(c2[0]["Mounts"][0]["RW"], false);
    let info = berth(a, &["containers", "info", &created2]).json();
    let spec_mount = info["spec"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/c")
        .cloned()
        .unwrap_or_else(|| panic!("no /c mount in {info}"));
    assert_eq!(spec_mount["options"], json!(["rbind", "ro"]));

    let exited = berth(a, &["inspect", &ex]).json();
    assert_eq!(exited[0]["State"]["ExitCode"], 3);
    assert_eq!(exited[0]["State"]["Running"], false);
    fails_with(
        berth(a, &["inspect", "nosuch"]),
        "container \"nosuch\" not found",
    );
}
