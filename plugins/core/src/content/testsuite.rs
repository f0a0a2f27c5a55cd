//! The content store conformance checks, after containerd `content/testsuite/testsuite.go`
//! (Writer, UpdateStatus, CommitExists, Resume, SmallBlob, CommitErrorState) plus Berth's
//! own: ref safety, expiry, concurrency.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::path::Path;
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, SystemTime};

    use berth_registry::{Classify, ErrorKind};

    use crate::content::{ContentStore, Digest};

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ContentStore::open(&dir.path().join("io.containerd.content.v1.content")).unwrap();
        (dir, store)
    }

    /// Deterministic pseudo-random bytes (containerd's `createContent` uses a seeded rand).
    fn content(size: usize, seed: u64) -> (Vec<u8>, Digest) {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect();
        let d = Digest::sha256_of(&data);
        (data, d)
    }

    /// Writes `data` in chunks from the writer's current offset.
    fn write_chunks(w: &mut crate::content::Writer, data: &[u8], chunk: usize) {
        for piece in data.chunks(chunk) {
            let off = w.offset();
            assert_eq!(w.write_at(off, piece).unwrap(), off + piece.len() as u64);
        }
    }

    fn write_blob(store: &ContentStore, reference: &str, data: &[u8]) -> Digest {
        let mut w = store.writer(reference, data.len() as u64, None).unwrap();
        write_chunks(&mut w, data, 4096);
        w.commit(data.len() as u64, None).unwrap()
    }

    fn blob_files(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let blobs = root.join("blobs");
        for alg in fs::read_dir(&blobs).unwrap() {
            let alg = alg.unwrap();
            for f in fs::read_dir(alg.path()).unwrap() {
                out.push(format!(
                    "{}/{}",
                    alg.file_name().to_string_lossy(),
                    f.unwrap().file_name().to_string_lossy()
                ));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn writer_commit_info_read() {
        let (_dir, store) = store();
        let sizes = [0usize, 1, 4095, 4096, 4097, 256 << 10, (1 << 20) + 3];
        let mut committed = BTreeSet::new();
        for (i, size) in sizes.into_iter().enumerate() {
            let (data, d) = content(size, i as u64);
            let before = SystemTime::now();
            let reference = format!("content-{i}");
            let mut w = store
                .writer(&reference, size as u64, Some(d.clone()))
                .unwrap();
            let st = w.status();
            assert_eq!(st.reference, reference);
            assert_eq!(st.offset, 0);
            assert_eq!(st.total, size as u64);
            assert!(st.started_at >= before - Duration::from_secs(1));
            write_chunks(&mut w, &data, 1000);
            assert_eq!(w.digest(), d);
            assert_eq!(w.commit(size as u64, Some(&d)).unwrap(), d);

            let info = store.info(&d).unwrap();
            assert_eq!(info.size, size as u64);
            assert_eq!(info.digest, d);
            assert!(info.created_at >= before - Duration::from_secs(1));
            assert_eq!(store.read_at(&d, 0, size + 10).unwrap(), data);
            if size > 10 {
                assert_eq!(store.read_at(&d, 5, 5).unwrap(), &data[5..10]);
            }
            committed.insert(d);
        }
        let walked: BTreeSet<_> = store
            .walk()
            .unwrap()
            .into_iter()
            .map(|i| i.digest)
            .collect();
        assert_eq!(walked, committed);
        assert!(store.list_statuses().unwrap().is_empty());
    }

    #[test]
    fn small_blob_without_total() {
        let (_dir, store) = store();
        let d = write_blob(&store, "small", b"\x00\x01\x02\x03");
        assert_eq!(d, Digest::sha256_of(b"\x00\x01\x02\x03"));
        assert_eq!(store.read_at(&d, 0, 4).unwrap(), b"\x00\x01\x02\x03");
    }

    #[test]
    fn resume_after_dropping_a_writer() {
        let (_dir, store) = store();
        let (data, d) = content(300_000, 7);
        let half = data.len() / 2;
        let mut w = store
            .writer("resume", data.len() as u64, Some(d.clone()))
            .unwrap();
        write_chunks(&mut w, &data[..half], 7000);
        let started = w.status().started_at;
        drop(w);

        let st = store.status("resume").unwrap();
        assert_eq!(st.offset, half as u64);
        assert_eq!(st.total, data.len() as u64);
        assert_eq!(st.expected, Some(d.clone()));

        // Resume without repeating total or digest: both come from the ingest.
        let mut w = store.writer("resume", 0, None).unwrap();
        assert_eq!(w.offset(), half as u64);
        assert_eq!(w.status().started_at, started);
        assert_eq!(w.status().total, data.len() as u64);
        assert_eq!(w.digest(), Digest::sha256_of(&data[..half]));
        write_chunks(&mut w, &data[half..], 9000);
        assert_eq!(w.digest(), d);
        assert_eq!(w.commit(data.len() as u64, Some(&d)).unwrap(), d);
        assert_eq!(store.read_at(&d, 0, data.len()).unwrap(), data);
    }

    #[test]
    fn status_follows_writes() {
        let (_dir, store) = store();
        let (data, _) = content(1024, 3);
        let mut w = store.writer("status", 1024, None).unwrap();
        let first = w.status();
        assert_eq!(first.started_at, first.updated_at);
        std::thread::sleep(Duration::from_millis(5));
        w.write_at(0, &data[..512]).unwrap();
        let st = w.status();
        assert_eq!(st.offset, 512);
        assert!(st.updated_at > first.updated_at);
        let on_disk = store.status("status").unwrap();
        assert_eq!(on_disk.offset, 512);
        assert_eq!(on_disk.reference, "status");
        assert_eq!(on_disk.started_at, first.started_at);
        assert!(on_disk.updated_at >= first.updated_at);
    }

    #[test]
    fn locked_ref_is_unavailable() {
        let (_dir, store) = store();
        let w = store.writer("locked", 0, None).unwrap();
        let err = store.writer("locked", 0, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.to_string().contains("ref locked locked for"), "{err}");
        // Other refs are free.
        drop(store.writer("other", 0, None).unwrap());
        drop(w);
        drop(store.writer("locked", 0, None).unwrap());
    }

    #[test]
    fn empty_ref_is_invalid() {
        let (_dir, store) = store();
        let err = store.writer("", 0, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn wrong_digest_keeps_the_ingest_and_stores_nothing() {
        let (_dir, store) = store();
        let (data, d) = content(100, 1);
        let (_, other) = content(100, 2);
        let mut w = store.writer("wrong-digest", 0, None).unwrap();
        write_chunks(&mut w, &data, 64);
        let err = w.commit(100, Some(&other)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert_eq!(
            err.to_string(),
            format!("unexpected commit digest {d}, expected {other}: failed precondition")
        );
        assert!(blob_files(store.root()).is_empty());
        // The ingest survives and the ref is free again.
        assert_eq!(store.status("wrong-digest").unwrap().offset, 100);
        let w = store.writer("wrong-digest", 0, None).unwrap();
        assert_eq!(w.commit(100, Some(&d)).unwrap(), d);
    }

    #[test]
    fn wrong_size_keeps_the_ingest() {
        let (_dir, store) = store();
        let (data, d) = content(100, 1);
        let mut w = store.writer("wrong-size", 0, None).unwrap();
        write_chunks(&mut w, &data, 64);
        let err = w.commit(99, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert_eq!(
            err.to_string(),
            "unexpected commit size 100, expected 99: failed precondition"
        );
        assert!(blob_files(store.root()).is_empty());
        let w = store.writer("wrong-size", 0, None).unwrap();
        assert_eq!(w.commit(100, None).unwrap(), d);
    }

    #[test]
    fn committing_existing_content_is_already_exists() {
        let (_dir, store) = store();
        let (data, d) = content(256, 5);
        write_blob(&store, "c1", &data);
        for (i, expected) in [Some(&d), None].into_iter().enumerate() {
            let reference = format!("c1-commitexists-{i}");
            let mut w = store.writer(&reference, 0, None).unwrap();
            write_chunks(&mut w, &data, 100);
            let err = w.commit(256, expected).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{i}: {err}");
            assert_eq!(err.to_string(), format!("content {d}: already exists"));
            // The ingest is gone: commit of existing content counts as done.
            assert_eq!(
                store.status(&reference).unwrap_err().kind(),
                ErrorKind::NotFound
            );
        }
        // Announcing an existing digest refuses the writer up front.
        let err = store.writer("c1-again", 256, Some(d.clone())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(
            store.status("c1-again").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            blob_files(store.root()),
            vec![format!("sha256/{}", d.hex())]
        );
    }

    /// containerd's `checkCommitErrorState`, step by step.
    #[test]
    fn commit_error_state() {
        let (_dir, store) = store();
        let (c1, d1) = content(256, 11);
        let (_, d2) = content(256, 12);
        write_blob(&store, "c1", &c1);
        let reference = "c1-commiterror-state";
        let expect_kind = |r: Result<Digest, crate::content::ContentError>, kind| {
            assert_eq!(r.unwrap_err().kind(), kind);
        };
        let locked = |s: &ContentStore| {
            assert_eq!(
                s.writer(reference, 0, None).unwrap_err().kind(),
                ErrorKind::Unavailable
            );
        };

        let mut w = store.writer(reference, 0, None).unwrap();
        w.write_at(0, &c1).unwrap();
        locked(&store);
        expect_kind(w.commit(256, Some(&d1)), ErrorKind::AlreadyExists);

        let mut w = store.writer(reference, 0, None).unwrap();
        locked(&store);
        w.write_at(0, &c1).unwrap();
        expect_kind(w.commit(256, None), ErrorKind::AlreadyExists);

        let mut w = store.writer(reference, 0, None).unwrap();
        locked(&store);
        let mut more = c1.clone();
        more.extend_from_slice(b"more");
        w.write_at(0, &more).unwrap();
        expect_kind(w.commit(260, Some(&d2)), ErrorKind::FailedPrecondition);

        let w = store.writer(reference, 0, None).unwrap();
        locked(&store);
        expect_kind(w.commit(256, None), ErrorKind::FailedPrecondition);

        let w = store.writer(reference, 0, None).unwrap();
        locked(&store);
        assert_eq!(w.commit(260, None).unwrap(), Digest::sha256_of(&more));

        let mut w = store.writer(reference, 0, None).unwrap();
        w.write_at(0, &c1).unwrap();
        locked(&store);
        expect_kind(w.commit(256, Some(&d1)), ErrorKind::AlreadyExists);

        let w = store.writer(reference, 0, None).unwrap();
        locked(&store);
        drop(w);
        drop(store.writer(reference, 0, None).unwrap());
    }

    #[test]
    fn write_at_wrong_offset_is_out_of_range() {
        let (_dir, store) = store();
        let mut w = store.writer("offsets", 0, None).unwrap();
        w.write_at(0, b"abcd").unwrap();
        for bad in [3, 5, 100] {
            let err = w.write_at(bad, b"x").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::OutOfRange);
            assert_eq!(
                err.to_string(),
                format!("write @{bad} must occur at current offset 4: out of range")
            );
        }
        // Nothing changed.
        assert_eq!(w.offset(), 4);
        assert_eq!(w.digest(), Digest::sha256_of(b"abcd"));
        // An empty write at the current offset is a no-op that reports the offset.
        assert_eq!(w.write_at(4, b"").unwrap(), 4);
    }

    #[test]
    fn offset_zero_restarts_the_write() {
        let (_dir, store) = store();
        let mut w = store.writer("restart", 0, None).unwrap();
        w.write_at(0, b"first attempt").unwrap();
        assert_eq!(w.write_at(0, b"second").unwrap(), 6);
        assert_eq!(w.digest(), Digest::sha256_of(b"second"));
        assert_eq!(store.status("restart").unwrap().offset, 6);
        // An empty write at 0 truncates too (containerd's Truncate(0)).
        assert_eq!(w.write_at(0, b"").unwrap(), 0);
        assert_eq!(w.digest(), Digest::sha256_of(b""));
        w.write_at(0, b"third").unwrap();
        assert_eq!(w.commit(5, None).unwrap(), Digest::sha256_of(b"third"));
    }

    #[test]
    fn exceeding_the_total_is_refused() {
        let (_dir, store) = store();
        let mut w = store.writer("total", 5, None).unwrap();
        w.write_at(0, b"abc").unwrap();
        let err = w.write_at(3, b"def").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let msg = err.to_string();
        assert!(
            msg.contains("6 bytes") && msg.contains("total of 5 bytes"),
            "{msg}"
        );
        // Refused writes change nothing; the rest still fits.
        assert_eq!(w.offset(), 3);
        assert_eq!(w.write_at(3, b"de").unwrap(), 5);
        assert_eq!(w.commit(5, None).unwrap(), Digest::sha256_of(b"abcde"));
    }

    #[test]
    fn abort_removes_the_ingest() {
        let (_dir, store) = store();
        let mut w = store.writer("abort", 0, None).unwrap();
        w.write_at(0, b"abc").unwrap();
        drop(w);
        store.abort("abort").unwrap();
        assert_eq!(
            store.status("abort").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let err = store.abort("abort").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), "ingest ref \"abort\": not found");
        // A new writer starts from nothing.
        assert_eq!(store.writer("abort", 0, None).unwrap().offset(), 0);
    }

    #[test]
    fn list_statuses_shows_every_ingest() {
        let (_dir, store) = store();
        let mut live = store.writer("b-live", 10, None).unwrap();
        live.write_at(0, b"12").unwrap();
        let mut idle = store.writer("a-idle", 0, None).unwrap();
        idle.write_at(0, b"123").unwrap();
        drop(idle);
        let done = store.writer("c-done", 0, None).unwrap();
        done.commit(0, None).unwrap();

        let list = store.list_statuses().unwrap();
        let got: Vec<_> = list
            .iter()
            .map(|s| (s.reference.as_str(), s.offset, s.total))
            .collect();
        assert_eq!(got, vec![("a-idle", 3, 0), ("b-live", 2, 10)]);
    }

    #[test]
    fn expire_ingests_skips_fresh_and_locked_ones() {
        let (_dir, store) = store();
        let mut held = store.writer("held", 0, None).unwrap();
        held.write_at(0, b"x").unwrap();
        let mut old = store.writer("old", 0, None).unwrap();
        old.write_at(0, b"y").unwrap();
        drop(old);

        assert!(store
            .expire_ingests(Duration::from_secs(3600))
            .unwrap()
            .is_empty());
        std::thread::sleep(Duration::from_millis(20));
        let expired = store.expire_ingests(Duration::from_millis(10)).unwrap();
        assert_eq!(expired, vec!["old".to_owned()]);
        assert_eq!(store.status("old").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(store.status("held").unwrap().offset, 1);
        drop(held);
        assert_eq!(
            store.expire_ingests(Duration::ZERO).unwrap(),
            vec!["held".to_owned()]
        );
    }

    #[test]
    fn hostile_refs_stay_inside_ingest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = ContentStore::open(&root).unwrap();
        let refs = [
            "../../x",
            "../escape",
            "a/b/c",
            "/abs/path",
            "..",
            ".",
            "tar-blobs/sha256/abc",
            "with\0nul",
        ];
        for (i, r) in refs.iter().enumerate() {
            let mut w = store.writer(r, 0, None).unwrap();
            w.write_at(0, format!("data-{i}").as_bytes()).unwrap();
            drop(w);
            assert_eq!(store.status(r).unwrap().reference, *r);
        }
        // Nothing appeared beside the store root, and ingest/ holds one hashed dir per ref.
        let beside: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(beside.len(), 1);
        let names: Vec<String> = fs::read_dir(root.join("ingest"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), refs.len());
        assert!(names.iter().all(|n| n.len() == 64));
        let listed: BTreeSet<_> = store
            .list_statuses()
            .unwrap()
            .into_iter()
            .map(|s| s.reference)
            .collect();
        assert_eq!(listed, refs.iter().map(|r| r.to_string()).collect());
        for r in refs {
            store.abort(r).unwrap();
        }
        assert_eq!(fs::read_dir(root.join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn concurrent_writers_of_the_same_content() {
        let (_dir, store) = store();
        let (data, d) = content(2 << 20, 99);
        let data = Arc::new(data);
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                let data = Arc::clone(&data);
                let barrier = Arc::clone(&barrier);
                let d = d.clone();
                std::thread::spawn(move || {
                    let mut w = store
                        .writer(&format!("same-{i}"), data.len() as u64, None)
                        .unwrap();
                    barrier.wait();
                    for piece in data.chunks(64 << 10) {
                        let off = w.offset();
                        w.write_at(off, piece).unwrap();
                    }
                    w.commit(data.len() as u64, Some(&d))
                })
            })
            .collect();
        let mut ok = 0;
        for h in handles {
            match h.join().unwrap() {
                Ok(got) => {
                    assert_eq!(got, d);
                    ok += 1;
                }
                Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}"),
            }
        }
        assert!(ok >= 1);
        assert_eq!(
            blob_files(store.root()),
            vec![format!("sha256/{}", d.hex())]
        );
        assert_eq!(store.read_at(&d, 0, data.len()).unwrap(), *data);
        assert!(store.list_statuses().unwrap().is_empty());
    }

    #[test]
    fn invalid_digests_are_refused() {
        for bad in [
            "sha256:abc",
            "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "sha256:../../../../etc/passwd",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn delete_then_rewrite() {
        let (_dir, store) = store();
        let d = write_blob(&store, "a", b"payload");
        store.delete(&d).unwrap();
        assert_eq!(store.info(&d).unwrap_err().kind(), ErrorKind::NotFound);
        assert!(store.walk().unwrap().is_empty());
        assert_eq!(write_blob(&store, "a", b"payload"), d);
        assert_eq!(store.info(&d).unwrap().size, 7);
    }
}
