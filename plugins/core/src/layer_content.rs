//! The namespaced content store as the snapshotters' [`LayerDiffer`] reads and writes it, so
//! that the Diff service and in-daemon unpack (the transfer library's local stores) apply
//! layers from the same store through the same differ.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_snapshotters::apply::{
    BlobReader, ContentFailure, LayerContent, LayerDiffer, LayerWriter,
};

use crate::namespaced_content::{NamespacedContent, NamespacedWriter};

/// The daemon's layer differ: applies from and writes into the namespaced content store,
/// mounting under `tmp_dir`.
pub fn layer_differ(content: NamespacedContent, tmp_dir: PathBuf) -> LayerDiffer {
    LayerDiffer::new(Arc::new(DifferContent(content)), tmp_dir)
}

/// The namespaced content store as the differ reads and writes it.
#[derive(Debug)]
struct DifferContent(NamespacedContent);

impl LayerContent for DifferContent {
    fn open(&self, ns: &str, digest: &str) -> Result<(BlobReader, u64), ContentFailure> {
        let (file, size) = self.0.open(ns, digest).map_err(ContentFailure::new)?;
        Ok((Box::new(file), size))
    }

    fn writer(
        &self,
        ns: &str,
        reference: &str,
        lease: Option<&str>,
    ) -> Result<Box<dyn LayerWriter>, ContentFailure> {
        let writer = self
            .0
            .writer(ns, reference, 0, None, lease)
            .map_err(ContentFailure::new)?;
        Ok(Box::new(DifferWriter(writer)))
    }

    fn abort(&self, ns: &str, reference: &str) -> Result<(), ContentFailure> {
        self.0.abort(ns, reference).map_err(ContentFailure::new)
    }

    fn set_labels(
        &self,
        ns: &str,
        digest: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), ContentFailure> {
        let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.0
            .update(ns, digest, labels, &paths)
            .map(drop)
            .map_err(ContentFailure::new)
    }
}

/// An ingest of the namespaced content store as the differ writes it.
struct DifferWriter(NamespacedWriter);

impl LayerWriter for DifferWriter {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<u64, ContentFailure> {
        self.0.write_at(offset, data).map_err(ContentFailure::new)
    }

    fn digest(&self) -> String {
        self.0.digest().to_string()
    }

    fn commit(
        self: Box<Self>,
        size: u64,
        labels: BTreeMap<String, String>,
    ) -> Result<(), ContentFailure> {
        self.0
            .commit(size, None, labels)
            .map(drop)
            .map_err(ContentFailure::new)
    }
}
