//! Writing the layer between two mount sets into a content store (containerd `diff/walking`
//! `walkingDiff.Compare`): both sides mounted read-only, the changes written compressed into
//! an ingest and committed with the `uncompressed` label naming the diffID.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use berth_registry::{Classify, ErrorKind};
use berth_wellknown::{label, media_type};

use super::{write_diff, Compression, DiffError, LayerDescriptor, LayerDiffer, LayerWriter};
use crate::mount::TempMount;
use crate::snapshotter::Mount;

/// The compression [`LayerDiffer::compare`] writes for a media type: containerd's walking
/// differ writes these three only; any other is NotImplemented.
pub fn diff_compression(media_type: &str) -> Result<Compression, DiffError> {
    match media_type {
        media_type::OCI_LAYER => Ok(Compression::None),
        media_type::OCI_LAYER_GZIP => Ok(Compression::Gzip),
        media_type::OCI_LAYER_ZSTD => Ok(Compression::Zstd),
        _ => Err(DiffError::UnsupportedMediaType(media_type.to_owned())),
    }
}

/// What [`LayerDiffer::compare`] writes, and where.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The media type of the blob written, which [`diff_compression`] accepts.
    pub media_type: String,
    /// The compression that media type means.
    pub compression: Compression,
    /// The ingest reference the blob is written under.
    pub reference: String,
    /// The lease that holds the ingest, if any.
    pub lease: Option<String>,
    /// Labels of the committed blob, besides the `uncompressed` one.
    pub labels: BTreeMap<String, String>,
}

impl LayerDiffer {
    /// Mounts `lower` and `upper` read-only, writes the layer between them into an ingest of
    /// `ns` and commits it with the [`label::UNCOMPRESSED`] label; a blob the namespace holds
    /// already gets the labels. Returns the blob's descriptor.
    pub fn compare(
        &self,
        ns: &str,
        lower: &[Mount],
        upper: &[Mount],
        opts: CompareOptions,
    ) -> Result<LayerDescriptor, DiffError> {
        let lower = TempMount::new_in(&self.tmp_dir, &read_only(lower))?;
        let upper = TempMount::new_in(&self.tmp_dir, &read_only(upper))?;
        let writer = self
            .content
            .writer(ns, &opts.reference, opts.lease.as_deref())?;
        let mut sink = BufWriter::with_capacity(1 << 20, ContentSink { writer, offset: 0 });
        let written = write_compressed(lower.path(), upper.path(), opts.compression, &mut sink);
        let closed = lower.close().and(upper.close());
        let sink = sink
            .into_inner()
            .map_err(|e| DiffError::Write(e.into_error()));
        let (diff_id, sink) = match (written, closed, sink) {
            (Ok(d), Ok(()), Ok(s)) => (d, s),
            (written, closed, _) => {
                if let Err(e) = self.content.abort(ns, &opts.reference) {
                    tracing::warn!(reference = %opts.reference, error = %e, "abort diff ingest");
                }
                written?;
                closed?;
                return Err(DiffError::Write(io::Error::other("flush failed")));
            }
        };
        let size = sink.offset;
        let digest = sink.writer.digest();
        let mut labels = opts.labels;
        labels.insert(label::UNCOMPRESSED.to_owned(), diff_id);
        match sink.writer.commit(size, labels.clone()) {
            Ok(()) => {}
            // The namespace holds this layer already: make sure it carries the label.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                self.content.set_labels(ns, &digest, labels)?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(LayerDescriptor {
            media_type: opts.media_type,
            digest,
            size,
        })
    }
}

/// The mounts with `ro` added, for reading both sides of a diff (containerd
/// `WithReadonlyTempMount`).
fn read_only(mounts: &[Mount]) -> Vec<Mount> {
    mounts
        .iter()
        .cloned()
        .map(|mut m| {
            m.options.retain(|o| o != "rw");
            if !m.options.iter().any(|o| o == "ro") {
                m.options.push("ro".into());
            }
            m
        })
        .collect()
}

/// Writes into an ingest at increasing offsets.
struct ContentSink {
    writer: Box<dyn LayerWriter>,
    offset: u64,
}

impl Write for ContentSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.offset = self
            .writer
            .write_at(self.offset, buf)
            .map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the layer between the two mounted trees, compressed, into `sink`; returns the
/// diffID.
fn write_compressed(
    lower: &Path,
    upper: &Path,
    compression: Compression,
    sink: &mut BufWriter<ContentSink>,
) -> Result<String, DiffError> {
    let diff_id = match compression {
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(&mut *sink, flate2::Compression::default());
            let res = write_diff(lower, upper, &mut gz)?;
            gz.finish().map_err(DiffError::Write)?;
            res.diff_id
        }
        Compression::Zstd => {
            let mut enc =
                zstd::stream::write::Encoder::new(&mut *sink, 3).map_err(DiffError::Write)?;
            let res = write_diff(lower, upper, &mut enc)?;
            enc.finish().map_err(DiffError::Write)?;
            res.diff_id
        }
        Compression::None | Compression::Detect => write_diff(lower, upper, &mut *sink)?.diff_id,
    };
    sink.flush().map_err(DiffError::Write)?;
    Ok(diff_id)
}
