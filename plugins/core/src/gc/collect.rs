//! One collection: mark from the roots, sweep the metadata, then the content store and the
//! ingests (containerd `metadata/db.go` `GarbageCollect`, `metadata/content.go`
//! `garbageCollect`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::error::{content, meta, GcError};
use super::labels::{is_expired, is_flat, is_root};
use super::mark::{Marker, Node, SnapshotSweeper};
use crate::content::{ContentError, ContentStore, IngestStatus};
use crate::error::MetadataError;
use crate::metadata::MetadataStore;

/// Ingests opened without a lease and not written for this long are removed. containerd keeps
/// them a day; a partial upload on a full disk then holds its space that long, so Berth's
/// default is seconds (`ingest_expiry` in the GC scheduler's config).
pub const INGEST_EXPIRY: Duration = Duration::from_secs(30);

/// How long an ingest whose lease went must sit unwritten before it is removed: none, as in
/// containerd, which aborts it at the collection the lease's removal starts. A writer holding
/// it keeps it (it is never cut), and one that resumes it under a new lease just as it goes
/// starts it afresh; the option lets tests hold it a moment.
pub const RELEASED_INGEST_IDLE: Duration = Duration::ZERO;

/// How recently committed a blob must be for its bytes to survive a collection although no
/// namespace records it yet: the content service commits the bytes, then writes the record,
/// and a sweep between the two must not take them. containerd holds one lock across both
/// steps and across its sweep; until Berth has such a lock, this grace covers the gap.
pub const BLOB_GRACE: Duration = Duration::from_secs(1);

/// The content store's ref for a namespace's ingest: the content service keeps each
/// namespace's refs apart by prefixing them with `<namespace>/`.
pub fn ingest_ref(ns: &str, reference: &str) -> String {
    format!("{ns}/{reference}")
}

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed from the content store (no namespace held them any more).
    pub blobs_removed: usize,
    /// Bytes of the blobs removed from the content store.
    pub bytes_removed: u64,
    /// Namespace blob records removed (unreachable from any root).
    pub records_removed: usize,
    /// Leases removed because their `containerd.io/gc.expire` had passed.
    pub leases_expired: usize,
    /// Ingests removed: their lease went, or they had none and nobody wrote them for
    /// [`GcOptions::ingest_expiry`].
    pub ingests_expired: usize,
    /// When the soonest ingest that stayed only because it was written recently becomes
    /// removable, from the collection's start: the scheduler collects again then, so that a
    /// partial upload does not wait for an unrelated deletion.
    pub next_ingest_check: Option<Duration>,
    /// Snapshots the snapshotters' sweepers removed.
    pub snapshots_removed: usize,
    /// How long the collection took.
    pub duration: Duration,
}

/// How a collection runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Ingests opened without a lease and not written for this long are removed.
    pub ingest_expiry: Duration,
    /// Ingests whose lease went and not written for this long are removed.
    pub released_ingest_idle: Duration,
    /// Blobs committed less than this long before the collection started keep their bytes.
    pub blob_grace: Duration,
    /// Snapshotters whose snapshots are marked and swept too.
    pub snapshot_sweepers: Vec<Arc<dyn SnapshotSweeper>>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            ingest_expiry: INGEST_EXPIRY,
            released_ingest_idle: RELEASED_INGEST_IDLE,
            blob_grace: BLOB_GRACE,
            snapshot_sweepers: Vec::new(),
        }
    }
}

/// Runs one collection with the default options. Blocking: async callers use the scheduler.
pub fn collect(meta: &MetadataStore, content: &ContentStore) -> Result<GcReport, GcError> {
    collect_with(meta, content, &GcOptions::default())
}

/// Runs one collection.
///
/// Roots: every image (its target and its own label references), every unexpired lease's
/// resources, every blob labelled `containerd.io/gc.root`, every snapshot a sweeper calls a
/// root, and every ingest that stays (its expected digest). Expired leases are removed and hold
/// nothing.
///
/// containerd runs the mark and the metadata sweep under a database-wide write lock. sled has
/// none; the content lock stands in for content (no commit and no claim of a recorded blob from
/// the candidates' listing to the end of the record sweep), and for the rest the order keeps
/// concurrent writers safe: the blob records that may be removed are listed first, then the
/// roots are read (leases before images, so a hold moving from a lease to an image is seen on
/// one side), and every reference is followed from a fresh read. A blob recorded after the
/// first listing is never a candidate.
pub fn collect_with(
    meta_store: &MetadataStore,
    store: &ContentStore,
    options: &GcOptions,
) -> Result<GcReport, GcError> {
    let started = Instant::now();
    let now = SystemTime::now();
    let mut report = GcReport::default();

    // Snapshots are created driver-first, record-second, and a record created after the
    // marking would look unreachable to the sweep: no Prepare/Commit runs during a collection.
    let _snapshots = meta_store.snapshot_sweep_guard();
    // No content commit, and no claim of a recorded blob by a writer's lease, between reading
    // the roots and sweeping the records (containerd holds its database lock across both): a
    // claim made after the leases were read would not save its blob from the sweep.
    let records_guard = meta_store.content_sweep_guard();
    let candidates = meta_store.all_blobs().map_err(meta("list blob records"))?;
    let mut marker = Marker::new(meta_store, &options.snapshot_sweepers);

    // Leases: their resources are roots unless they expired.
    let mut expired_leases = Vec::new();
    let mut leased_ingests = HashSet::new();
    for (ns, lease, resources) in meta_store.all_leases().map_err(meta("list leases"))? {
        if is_expired(&lease.id, &lease.labels, now) {
            expired_leases.push((ns, lease.id));
            continue;
        }
        let flat = is_flat(&lease.labels);
        for resource in resources {
            if resource.is_content() {
                marker.push(Node::content(&ns, &resource.id), flat);
            } else if resource.is_ingest() {
                leased_ingests.insert(ingest_ref(&ns, &resource.id));
            } else if let Some(snapshotter) = resource.snapshotter() {
                marker.push(Node::snapshot(&ns, snapshotter, &resource.id), flat);
            }
        }
    }

    // Images: the target and the image's own label references.
    for (ns, image) in meta_store.all_images().map_err(meta("list images"))? {
        marker.push(Node::content(&ns, &image.target.digest), false);
        marker.push_label_refs(&ns, &image.labels);
    }

    // Containers: their root filesystem snapshot and their label references.
    for (ns, container) in meta_store
        .all_containers()
        .map_err(meta("list containers"))?
    {
        if !container.snapshot_key.is_empty() {
            marker.push(
                Node::snapshot(&ns, &container.snapshotter, &container.snapshot_key),
                false,
            );
        }
        marker.push_label_refs(&ns, &container.labels);
    }

    // Blobs labelled as roots, read afresh so that a label added during the collection counts.
    for (ns, rec) in meta_store.all_blobs().map_err(meta("list blob records"))? {
        if is_root(&rec.labels) {
            marker.push(Node::content(&ns, &rec.digest), false);
        }
    }

    for sweeper in &options.snapshot_sweepers {
        let roots = sweeper.roots().map_err(|source| GcError::Snapshots {
            snapshotter: sweeper.snapshotter().to_owned(),
            source,
        })?;
        for (ns, key) in roots {
            marker.push(Node::snapshot(&ns, sweeper.snapshotter(), &key), false);
        }
    }

    // Ingests: leased ones and recently written ones stay, and so does the blob they are
    // expected to become (containerd's ingest node references its expected digest).
    let mut expiring_ingests = Vec::new();
    let mut expected_digests = HashSet::new();
    for status in store.list_statuses().map_err(content("list ingests"))? {
        if !leased_ingests.contains(&status.reference) {
            match ingest_fate(store, &status, options, now) {
                IngestFate::Expire(limit) => {
                    expiring_ingests.push((status.reference, limit));
                    continue;
                }
                IngestFate::LookAgainIn(wait) => report.note_ingest_check(wait),
            }
        }
        if let Some(expected) = status.expected {
            let digest = expected.to_string();
            if let Some((ns, _)) = status.reference.split_once('/') {
                marker.push(Node::content(ns, &digest), false);
            }
            expected_digests.insert(digest);
        }
    }

    let marked = marker.run()?;

    // Sweep the metadata: unreachable blob records, expired leases, unmarked snapshots.
    for (ns, rec) in candidates {
        if marked.has_content(&ns, &rec.digest) {
            continue;
        }
        match meta_store.delete_blob(&ns, &rec.digest) {
            Ok(()) => {
                tracing::debug!(namespace = %ns, digest = %rec.digest, "removed blob record");
                report.records_removed += 1;
            }
            // Deleted by a client meanwhile.
            Err(MetadataError::ContentNotFound(_)) => {}
            Err(e) => return Err(meta("remove blob record")(e)),
        }
    }
    for (ns, id) in expired_leases {
        match meta_store.delete_lease(&ns, &id) {
            Ok(()) => {
                tracing::debug!(namespace = %ns, lease = %id, "removed expired lease");
                report.leases_expired += 1;
            }
            Err(MetadataError::LeaseNotFound(_)) => {}
            Err(e) => return Err(meta("remove expired lease")(e)),
        }
    }
    // Snapshot removal can take long (whole trees); commits may go on meanwhile.
    drop(records_guard);
    for sweeper in &options.snapshot_sweepers {
        report.snapshots_removed +=
            sweeper
                .sweep(&marked)
                .map_err(|source| GcError::Snapshots {
                    snapshotter: sweeper.snapshotter().to_owned(),
                    source,
                })?;
    }

    // Sweep the content store: bytes that no namespace records any more. Bytes a live lease
    // names are kept too: the content service adds a blob to its lease before recording it.
    // No commit may be between "bytes in place" and "recorded" while we decide.
    let _sweep = meta_store.content_sweep_guard();
    let mut held: HashSet<String> = meta_store
        .all_blobs()
        .map_err(meta("list blob records"))?
        .into_iter()
        .map(|(_, rec)| rec.digest)
        .collect();
    for (_, lease, resources) in meta_store.all_leases().map_err(meta("list leases"))? {
        if !is_expired(&lease.id, &lease.labels, now) {
            held.extend(
                resources
                    .into_iter()
                    .filter(|r| r.is_content())
                    .map(|r| r.id),
            );
        }
    }
    held.extend(expected_digests);
    let committed_before = now.checked_sub(options.blob_grace).unwrap_or(now);
    for info in store.walk().map_err(content("walk blobs"))? {
        let digest = info.digest.to_string();
        if held.contains(&digest) || info.created_at >= committed_before {
            continue;
        }
        // No re-check per blob (a scan of every record each, quadratic): `held` was read
        // under the sweep guard, and a commit records its blob only while holding the guard.
        match store.delete(&info.digest) {
            Ok(()) => {
                tracing::debug!(digest = %digest, "removed content");
                report.blobs_removed += 1;
                report.bytes_removed += info.size;
            }
            Err(ContentError::NotFound { .. }) => {}
            Err(e) => return Err(content("remove blob")(e)),
        }
    }

    expire_ingests(store, expiring_ingests, &mut report)?;

    report.duration = started.elapsed();
    tracing::info!(
        records_removed = report.records_removed,
        blobs_removed = report.blobs_removed,
        leases_expired = report.leases_expired,
        ingests_expired = report.ingests_expired,
        snapshots_removed = report.snapshots_removed,
        duration = ?report.duration,
        "garbage collected"
    );
    Ok(report)
}

/// Removes the ingests no lease holds that sat unwritten past their limit, and nothing else (no
/// marking, no record or blob sweep): what the scheduler runs when an ingest came, went or
/// became removable, so that an abandoned upload's space comes back without the cost, or the
/// side effects, of a whole collection.
pub fn sweep_ingests(
    meta_store: &MetadataStore,
    store: &ContentStore,
    options: &GcOptions,
) -> Result<GcReport, GcError> {
    let started = Instant::now();
    let now = SystemTime::now();
    let mut report = GcReport::default();
    // Leases first: a writer adds its ingest to its lease before the ingest exists, so an
    // ingest listed below whose lease was added after this read is fresh (or held by its
    // writer) and stays.
    let mut leased = HashSet::new();
    for (ns, lease, resources) in meta_store.all_leases().map_err(meta("list leases"))? {
        if is_expired(&lease.id, &lease.labels, now) {
            continue;
        }
        leased.extend(
            resources
                .iter()
                .filter(|r| r.is_ingest())
                .map(|r| ingest_ref(&ns, &r.id)),
        );
    }
    let mut expiring = Vec::new();
    for status in store.list_statuses().map_err(content("list ingests"))? {
        if leased.contains(&status.reference) {
            continue;
        }
        match ingest_fate(store, &status, options, now) {
            IngestFate::Expire(limit) => expiring.push((status.reference, limit)),
            IngestFate::LookAgainIn(wait) => report.note_ingest_check(wait),
        }
    }
    expire_ingests(store, expiring, &mut report)?;
    report.duration = started.elapsed();
    if report.ingests_expired > 0 {
        tracing::info!(ingests_expired = report.ingests_expired, duration = ?report.duration, "ingests expired");
    }
    Ok(report)
}

/// What becomes of an ingest no lease holds.
enum IngestFate {
    /// Idle past this limit: remove it (unless a writer holds it).
    Expire(Duration),
    /// Written recently: it may go after this long.
    LookAgainIn(Duration),
}

/// How long an ingest no lease holds may sit unwritten before it goes: briefly when it was
/// opened under a lease that has gone since, [`GcOptions::ingest_expiry`] when it never had one.
fn ingest_fate(
    store: &ContentStore,
    status: &IngestStatus,
    options: &GcOptions,
    now: SystemTime,
) -> IngestFate {
    let limit = if store.ingest_was_leased(&status.reference) {
        options.released_ingest_idle
    } else {
        options.ingest_expiry
    };
    let age = now
        .duration_since(status.updated_at)
        .unwrap_or(Duration::ZERO);
    if age >= limit {
        IngestFate::Expire(limit)
    } else {
        IngestFate::LookAgainIn(limit - age)
    }
}

/// Removes each `(ref, limit)` unless a writer holds it or wrote it since it was listed; one that
/// stays is looked at again after `limit` (a writer that lets go of it is seen then).
fn expire_ingests(
    store: &ContentStore,
    expiring: Vec<(String, Duration)>,
    report: &mut GcReport,
) -> Result<(), GcError> {
    for (reference, limit) in expiring {
        if store
            .remove_idle_ingest(&reference, limit)
            .map_err(content("remove expired ingest"))?
        {
            tracing::debug!(reference = %reference, "removed expired ingest");
            report.ingests_expired += 1;
        } else if store.status(&reference).is_ok() {
            report.note_ingest_check(limit);
        }
    }
    Ok(())
}

impl GcReport {
    /// Keeps the soonest of the ingest checks asked for.
    fn note_ingest_check(&mut self, wait: Duration) {
        self.next_ingest_check = Some(self.next_ingest_check.map_or(wait, |w| w.min(wait)));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::content::Digest;
    use crate::gc::mark::{MarkSet, SnapshotRefs, SweepError};
    use crate::metadata::{Descriptor, Image, LeaseResource};

    struct Fixture {
        _dir: tempfile::TempDir,
        meta: MetadataStore,
        content: ContentStore,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetadataStore::open(&dir.path().join("meta")).unwrap();
        let content = ContentStore::open(&dir.path().join("content")).unwrap();
        Fixture {
            _dir: dir,
            meta,
            content,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// No grace: blobs written by the test are fair game at once.
    fn now_options() -> GcOptions {
        GcOptions {
            blob_grace: Duration::ZERO,
            ..GcOptions::default()
        }
    }

    impl Fixture {
        /// Writes `data` through the real writer (once) and records it in `ns`.
        fn put(&self, ns: &str, data: &[u8], labels: BTreeMap<String, String>) -> String {
            let digest = Digest::sha256_of(data);
            if self.content.info(&digest).is_err() {
                let mut w = self
                    .content
                    .writer(&ingest_ref(ns, &format!("put-{digest}")), 0, None)
                    .unwrap();
                w.write_at(0, data).unwrap();
                assert_eq!(w.commit(data.len() as u64, None).unwrap(), digest);
            }
            let digest = digest.to_string();
            self.meta
                .add_blob(ns, &digest, data.len() as u64, labels)
                .unwrap();
            digest
        }

        fn image(&self, ns: &str, name: &str, target: &str, labels: BTreeMap<String, String>) {
            self.meta
                .create_image(
                    ns,
                    Image {
                        name: name.into(),
                        labels,
                        target: Descriptor {
                            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                            digest: target.into(),
                            size: 1,
                            annotations: BTreeMap::new(),
                        },
                        created_at: SystemTime::UNIX_EPOCH,
                        updated_at: SystemTime::UNIX_EPOCH,
                    },
                )
                .unwrap();
        }

        fn collect(&self) -> GcReport {
            collect_with(&self.meta, &self.content, &now_options()).unwrap()
        }

        fn has_record(&self, ns: &str, digest: &str) -> bool {
            self.meta.get_blob(ns, digest).is_ok()
        }

        fn has_bytes(&self, digest: &str) -> bool {
            self.content.info(&digest.parse().unwrap()).is_ok()
        }
    }

    #[test]
    fn an_image_keeps_its_target_and_what_that_references() {
        let f = fixture();
        let config = f.put("default", b"config", BTreeMap::new());
        let layer = f.put("default", b"layer", BTreeMap::new());
        let manifest = f.put(
            "default",
            b"manifest",
            labels(&[
                ("containerd.io/gc.ref.content.config", &config),
                ("containerd.io/gc.ref.content.l.0", &layer),
            ]),
        );
        let orphan = f.put("default", b"orphan", BTreeMap::new());
        f.image("default", "docker.io/x:1", &manifest, BTreeMap::new());

        let report = f.collect();
        assert_eq!(report.records_removed, 1);
        assert_eq!(report.blobs_removed, 1);
        assert_eq!(report.bytes_removed, b"orphan".len() as u64);
        assert!(!f.has_record("default", &orphan));
        assert!(!f.has_bytes(&orphan));
        for kept in [&config, &layer, &manifest] {
            assert!(f.has_record("default", kept));
            assert!(f.has_bytes(kept));
        }

        f.meta.delete_image("default", "docker.io/x:1").unwrap();
        let report = f.collect();
        assert_eq!(report.records_removed, 3);
        assert_eq!(report.blobs_removed, 3);
        for gone in [&config, &layer, &manifest] {
            assert!(!f.has_record("default", gone));
            assert!(!f.has_bytes(gone));
        }
        assert!(f.content.walk().unwrap().is_empty());
        // Nothing left to do.
        let idle = f.collect();
        assert_eq!(
            GcReport {
                duration: Duration::ZERO,
                ..idle
            },
            GcReport::default()
        );
    }

    #[test]
    fn image_labels_reference_content_too() {
        let f = fixture();
        let target = f.put("default", b"target", BTreeMap::new());
        let extra = f.put("default", b"extra", BTreeMap::new());
        f.image(
            "default",
            "img",
            &target,
            labels(&[("containerd.io/gc.ref.content.extra", &extra)]),
        );
        assert_eq!(f.collect().records_removed, 0);
        assert!(f.has_record("default", &extra));
    }

    #[test]
    fn bytes_stay_until_no_namespace_records_them() {
        let f = fixture();
        let shared = f.put("a", b"shared", BTreeMap::new());
        assert_eq!(f.put("b", b"shared", BTreeMap::new()), shared);
        f.image("a", "img", &shared, BTreeMap::new());
        f.image("b", "img", &shared, BTreeMap::new());

        f.meta.delete_image("a", "img").unwrap();
        let report = f.collect();
        assert_eq!((report.records_removed, report.blobs_removed), (1, 0));
        assert!(!f.has_record("a", &shared));
        assert!(f.has_record("b", &shared));
        assert!(f.has_bytes(&shared));

        f.meta.delete_image("b", "img").unwrap();
        let report = f.collect();
        assert_eq!((report.records_removed, report.blobs_removed), (1, 1));
        assert!(!f.has_bytes(&shared));
    }

    #[test]
    fn a_leased_blob_lives_until_the_lease_goes() {
        let f = fixture();
        let manifest_ref = f.put("default", b"ref", BTreeMap::new());
        let blob = f.put(
            "default",
            b"leased",
            labels(&[("containerd.io/gc.ref.content", &manifest_ref)]),
        );
        f.meta
            .create_lease("default", "pull", BTreeMap::new())
            .unwrap();
        f.meta
            .add_lease_resource("default", "pull", &LeaseResource::content(&blob))
            .unwrap();
        // A lease in another namespace holds nothing here.
        f.meta
            .create_lease("other", "pull", BTreeMap::new())
            .unwrap();

        assert_eq!(f.collect().records_removed, 0);
        assert!(f.has_record("default", &blob));
        assert!(f.has_record("default", &manifest_ref));

        f.meta.delete_lease("default", "pull").unwrap();
        let report = f.collect();
        assert_eq!((report.records_removed, report.blobs_removed), (2, 2));
        assert!(!f.has_bytes(&blob));
    }

    #[test]
    fn a_flat_lease_holds_without_following() {
        let f = fixture();
        let child = f.put("default", b"child", BTreeMap::new());
        let parent = f.put(
            "default",
            b"parent",
            labels(&[("containerd.io/gc.ref.content.x", &child)]),
        );
        f.meta
            .create_lease("default", "flat", labels(&[("containerd.io/gc.flat", "1")]))
            .unwrap();
        f.meta
            .add_lease_resource("default", "flat", &LeaseResource::content(&parent))
            .unwrap();
        let report = f.collect();
        assert_eq!(report.records_removed, 1);
        assert!(f.has_record("default", &parent));
        assert!(!f.has_record("default", &child));
    }

    #[test]
    fn an_expired_lease_is_removed_and_holds_nothing() {
        let f = fixture();
        let blob = f.put("default", b"expiring", BTreeMap::new());
        let kept = f.put("default", b"kept", BTreeMap::new());
        f.meta
            .create_lease(
                "default",
                "old",
                labels(&[("containerd.io/gc.expire", "2001-01-01T00:00:00Z")]),
            )
            .unwrap();
        f.meta
            .add_lease_resource("default", "old", &LeaseResource::content(&blob))
            .unwrap();
        f.meta
            .create_lease(
                "default",
                "new",
                labels(&[("containerd.io/gc.expire", "2999-01-01T00:00:00Z")]),
            )
            .unwrap();
        f.meta
            .add_lease_resource("default", "new", &LeaseResource::content(&kept))
            .unwrap();

        let report = f.collect();
        assert_eq!(report.leases_expired, 1);
        assert_eq!((report.records_removed, report.blobs_removed), (1, 1));
        assert!(matches!(
            f.meta.get_lease("default", "old"),
            Err(MetadataError::LeaseNotFound(_))
        ));
        assert!(f.meta.get_lease("default", "new").is_ok());
        assert!(!f.has_bytes(&blob));
        assert!(f.has_bytes(&kept));
    }

    #[test]
    fn gc_root_keeps_a_blob_and_its_references() {
        let f = fixture();
        let child = f.put("default", b"child", BTreeMap::new());
        let root = f.put(
            "default",
            b"root",
            labels(&[
                ("containerd.io/gc.root", "2024-01-01T00:00:00Z"),
                ("containerd.io/gc.ref.content/x", &child),
            ]),
        );
        assert_eq!(f.collect().records_removed, 0);
        assert!(f.has_record("default", &root));
        assert!(f.has_record("default", &child));
    }

    #[test]
    fn unleased_old_ingests_expire() {
        let f = fixture();
        f.meta
            .create_lease("default", "l", BTreeMap::new())
            .unwrap();
        f.meta
            .add_lease_resource("default", "l", &LeaseResource::ingest("leased"))
            .unwrap();
        for reference in ["leased", "stale"] {
            let mut w = f
                .content
                .writer(&ingest_ref("default", reference), 0, None)
                .unwrap();
            w.write_at(0, b"partial").unwrap();
        }
        // Within the expiry, nothing goes.
        let report = collect_with(&f.meta, &f.content, &now_options()).unwrap();
        assert_eq!(report.ingests_expired, 0);
        assert_eq!(f.content.list_statuses().unwrap().len(), 2);

        // Past it, only the leased ingest stays.
        let options = GcOptions {
            ingest_expiry: Duration::ZERO,
            ..now_options()
        };
        let report = collect_with(&f.meta, &f.content, &options).unwrap();
        assert_eq!(report.ingests_expired, 1);
        let left: Vec<_> = f
            .content
            .list_statuses()
            .unwrap()
            .into_iter()
            .map(|s| s.reference)
            .collect();
        assert_eq!(left, ["default/leased"]);
    }

    /// Starts an ingest in `default` with some bytes, marked as written under a lease or not,
    /// and lets go of it.
    fn partial_ingest(f: &Fixture, reference: &str, leased: bool) {
        let mut w = f
            .content
            .writer(&ingest_ref("default", reference), 0, None)
            .unwrap();
        w.set_leased(leased).unwrap();
        w.write_at(0, b"partial").unwrap();
    }

    #[test]
    fn an_ingest_goes_soon_after_its_lease_goes() {
        let f = fixture();
        f.meta
            .create_lease("default", "l", BTreeMap::new())
            .unwrap();
        f.meta
            .add_lease_resource("default", "l", &LeaseResource::ingest("upload"))
            .unwrap();
        partial_ingest(&f, "upload", true);
        // Held by its lease: it stays whatever its age, and nothing needs a second look.
        let no_wait = GcOptions {
            released_ingest_idle: Duration::ZERO,
            ..now_options()
        };
        let report = collect_with(&f.meta, &f.content, &no_wait).unwrap();
        assert_eq!(report.ingests_expired, 0);
        assert_eq!(report.next_ingest_check, None);

        f.meta.delete_lease("default", "l").unwrap();
        // Held a moment (an option): the collection keeps it and says when to look again, well
        // before the unleased expiry.
        let hold_a_second = GcOptions {
            released_ingest_idle: Duration::from_secs(1),
            ..now_options()
        };
        let report = collect_with(&f.meta, &f.content, &hold_a_second).unwrap();
        assert_eq!(report.ingests_expired, 0);
        let wait = report
            .next_ingest_check
            .expect("a second look is scheduled");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        // By default (containerd's behaviour): gone at the collection after the lease.
        assert_eq!(RELEASED_INGEST_IDLE, Duration::ZERO);
        let report = collect_with(&f.meta, &f.content, &now_options()).unwrap();
        assert_eq!(report.ingests_expired, 1);
        assert!(f.content.list_statuses().unwrap().is_empty());
    }

    #[test]
    fn a_young_unleased_ingest_says_when_it_expires() {
        let f = fixture();
        partial_ingest(&f, "no-lease", false);
        let report = collect_with(&f.meta, &f.content, &now_options()).unwrap();
        assert_eq!(report.ingests_expired, 0);
        let wait = report
            .next_ingest_check
            .expect("a second look is scheduled");
        assert!(
            wait > INGEST_EXPIRY - Duration::from_secs(5) && wait <= INGEST_EXPIRY,
            "{wait:?}"
        );
        assert_eq!(f.content.list_statuses().unwrap().len(), 1);
    }

    #[test]
    fn sweeping_ingests_touches_nothing_else() {
        let f = fixture();
        // Garbage a collection would take, and an idle upload nobody leases.
        let loose = f.put("default", b"loose", BTreeMap::new());
        partial_ingest(&f, "idle", false);
        f.meta
            .create_lease("default", "l", BTreeMap::new())
            .unwrap();
        f.meta
            .add_lease_resource("default", "l", &LeaseResource::ingest("held"))
            .unwrap();
        partial_ingest(&f, "held", true);
        let options = GcOptions {
            ingest_expiry: Duration::ZERO,
            released_ingest_idle: Duration::ZERO,
            ..now_options()
        };
        let report = sweep_ingests(&f.meta, &f.content, &options).unwrap();
        assert_eq!((report.ingests_expired, report.records_removed), (1, 0));
        assert!(f.has_record("default", &loose) && f.has_bytes(&loose));
        let left: Vec<_> = f
            .content
            .list_statuses()
            .unwrap()
            .into_iter()
            .map(|s| s.reference)
            .collect();
        assert_eq!(left, ["default/held"]);
    }

    #[test]
    fn a_live_writer_is_never_cut() {
        let f = fixture();
        let mut w = f
            .content
            .writer(&ingest_ref("default", "busy"), 0, None)
            .unwrap();
        w.set_leased(true).unwrap();
        w.write_at(0, b"partial").unwrap();
        let options = GcOptions {
            released_ingest_idle: Duration::ZERO,
            ingest_expiry: Duration::ZERO,
            ..now_options()
        };
        let report = collect_with(&f.meta, &f.content, &options).unwrap();
        assert_eq!(report.ingests_expired, 0);
        assert!(report.next_ingest_check.is_some());
        // Once the writer lets go, the next look removes it.
        drop(w);
        let report = collect_with(&f.meta, &f.content, &options).unwrap();
        assert_eq!(report.ingests_expired, 1);
    }

    /// A writer that finds its blob recorded holds it with its lease and answers AlreadyExists;
    /// a collection running meanwhile must not sweep that blob (the client never sends it).
    #[test]
    fn a_blob_claimed_during_a_collection_survives_it() {
        use crate::namespaced_content::{NamespacedContent, NamespacedContentError};
        let f = fixture();
        let content =
            NamespacedContent::new(Arc::new(f.meta.clone()), Arc::new(f.content.clone()), true);
        for round in 0..60 {
            // Recorded but unreferenced: garbage, until a writer claims it.
            let digest = f.put(
                "default",
                format!("blob {round}").as_bytes(),
                BTreeMap::new(),
            );
            let lease = format!("l{round}");
            f.meta
                .create_lease("default", &lease, BTreeMap::new())
                .unwrap();
            let claimed = std::thread::scope(|scope| {
                let gc = scope.spawn(|| f.collect());
                let claim = content.writer(
                    "default",
                    &format!("w{round}"),
                    0,
                    Some(&digest),
                    Some(&lease),
                );
                gc.join().unwrap();
                claim
            });
            match claimed {
                Err(NamespacedContentError::Metadata(MetadataError::ContentExists(_))) => {
                    assert!(
                        f.has_record("default", &digest),
                        "round {round}: record swept"
                    );
                    assert!(f.has_bytes(&digest), "round {round}: bytes swept");
                }
                // The collection came first: the writer must send the bytes.
                Ok(_) => assert!(!f.has_record("default", &digest)),
                Err(e) => panic!("round {round}: {e}"),
            }
        }
    }

    /// Bytes in the store that no namespace records (an import killed between its commit and
    /// its record) are claimed by a writer that will send none: a collection before its commit
    /// must leave them, and the commit must record a blob that can be read.
    #[test]
    fn orphan_bytes_claimed_by_a_leased_writer_survive_a_collection() {
        use crate::namespaced_content::NamespacedContent;
        let f = fixture();
        let data = b"index.json of a killed import";
        let digest = Digest::sha256_of(data);
        let mut w = f.content.writer("default/killed", 0, None).unwrap();
        w.write_at(0, data).unwrap();
        w.commit(data.len() as u64, None).unwrap();
        let content =
            NamespacedContent::new(Arc::new(f.meta.clone()), Arc::new(f.content.clone()), true);
        f.meta
            .create_lease("default", "import", BTreeMap::new())
            .unwrap();
        let writer = content
            .writer(
                "default",
                "tar-index.json",
                data.len() as u64,
                Some(&digest.to_string()),
                Some("import"),
            )
            .unwrap();
        assert_eq!(writer.status().offset, data.len() as u64, "nothing to send");
        f.collect();
        writer
            .commit(
                data.len() as u64,
                Some(&digest.to_string()),
                BTreeMap::new(),
            )
            .unwrap();
        assert!(f.has_record("default", &digest.to_string()));
        assert!(f.has_bytes(&digest.to_string()), "recorded without bytes");
    }

    #[test]
    fn an_ingest_keeps_the_record_it_expects() {
        let f = fixture();
        let expected = Digest::sha256_of(b"on its way");
        // A record without bytes yet: another namespace's copy, say, under the shared policy.
        f.meta
            .add_blob("default", &expected.to_string(), 10, BTreeMap::new())
            .unwrap();
        let mut w = f
            .content
            .writer("default/on-its-way", 0, Some(expected.clone()))
            .unwrap();
        w.write_at(0, b"on its").unwrap();
        drop(w);
        let report = f.collect();
        assert_eq!((report.records_removed, report.ingests_expired), (0, 0));
        // Once the ingest expires, it protects nothing.
        let options = GcOptions {
            ingest_expiry: Duration::ZERO,
            ..now_options()
        };
        let report = collect_with(&f.meta, &f.content, &options).unwrap();
        assert_eq!((report.records_removed, report.ingests_expired), (1, 1));
    }

    #[test]
    fn fresh_bytes_survive_the_default_grace() {
        let f = fixture();
        let mut w = f.content.writer("default/unrecorded", 0, None).unwrap();
        w.write_at(0, b"just committed").unwrap();
        let digest = w.commit(0, None).unwrap();
        // The content service has committed the bytes but not yet written the record.
        let report = collect(&f.meta, &f.content).unwrap();
        assert_eq!(report.blobs_removed, 0);
        assert!(f.content.info(&digest).is_ok());
        // Without the grace they are garbage.
        assert_eq!(f.collect().blobs_removed, 1);
    }

    /// A snapshotter stand-in: `(namespace, key) -> (parent, labels)`.
    #[derive(Debug, Default)]
    struct FakeSnapshots {
        snapshots: BTreeMap<(String, String), SnapshotRefs>,
        swept_with: Mutex<Vec<(String, String)>>,
    }

    impl SnapshotSweeper for FakeSnapshots {
        fn snapshotter(&self) -> &str {
            "fake"
        }

        fn roots(&self) -> Result<Vec<(String, String)>, SweepError> {
            Ok(Vec::new())
        }

        fn references(&self, ns: &str, key: &str) -> Result<Option<SnapshotRefs>, SweepError> {
            Ok(self
                .snapshots
                .get(&(ns.to_owned(), key.to_owned()))
                .cloned())
        }

        fn sweep(&self, marked: &MarkSet) -> Result<usize, SweepError> {
            let mut kept: Vec<_> = marked
                .snapshots_of("fake")
                .map(|(ns, k)| (ns.to_owned(), k.to_owned()))
                .collect();
            kept.sort();
            let removed = self.snapshots.keys().filter(|k| !kept.contains(k)).count();
            *self.swept_with.lock().unwrap() = kept;
            Ok(removed)
        }
    }

    #[test]
    fn snapshot_references_are_marked_for_sweepers() {
        let f = fixture();
        let diff_blob = f.put("default", b"uncompressed", BTreeMap::new());
        let config = f.put(
            "default",
            b"config",
            labels(&[("containerd.io/gc.ref.snapshot.fake", "top")]),
        );
        f.image("default", "img", &config, BTreeMap::new());
        let snap = |parent: Option<&str>, labels: BTreeMap<String, String>| SnapshotRefs {
            parent: parent.map(str::to_owned),
            labels,
        };
        let key = |k: &str| ("default".to_owned(), k.to_owned());
        let fake = Arc::new(FakeSnapshots {
            snapshots: BTreeMap::from([
                (
                    key("top"),
                    snap(
                        Some("base"),
                        labels(&[("containerd.io/gc.ref.content", &diff_blob)]),
                    ),
                ),
                (key("base"), snap(None, BTreeMap::new())),
                (key("unused"), snap(None, BTreeMap::new())),
            ]),
            swept_with: Mutex::default(),
        });
        let options = GcOptions {
            snapshot_sweepers: vec![fake.clone()],
            ..now_options()
        };
        let report = collect_with(&f.meta, &f.content, &options).unwrap();
        assert_eq!(report.snapshots_removed, 1);
        assert_eq!(
            report.records_removed, 0,
            "the snapshot's label keeps the blob"
        );
        assert_eq!(*fake.swept_with.lock().unwrap(), [key("base"), key("top")]);
    }
}
