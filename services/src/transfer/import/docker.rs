//! A Docker archive (`docker save`) streamed to the Transfer service, as containerd's
//! `archive.ImportIndex` takes one: every regular file that is not an OCI blob goes into the
//! content store under its own digest (known only at its end), and once the stream is read the
//! `manifest.json` becomes Docker schema 2 manifests and an OCI index (the transfer library's
//! [`berth_transfer::archive`] builders, the JSON containerd writes), which the import then
//! records like an OCI layout's `index.json`.

use std::collections::{BTreeMap, HashMap};

use berth_core::namespaced_content::{NamespacedContent, NamespacedWriter};
use berth_transfer::archive::{
    docker_index_json, docker_manifest_json, follow_links, is_compressed, parse_docker_manifest,
    DockerEntry, StoredFile,
};
use berth_transfer::manifest::parse_config;
use berth_transfer::types::sha256_digest;
use berth_transfer::{ContentStore, Cx, Descriptor};
use berth_wellknown::media_type;

use super::{bad, put_bytes, store_err};
use crate::transfer::TransferServiceError;

/// The files of an archive that are not OCI blobs, once stored: path → file; and its
/// symbolic links: path → the path they lead to.
#[derive(Debug, Default)]
pub(super) struct Files {
    pub stored: HashMap<String, StoredFile>,
    pub links: HashMap<String, String>,
}

impl Files {
    /// The stored file at `path`, following links.
    fn get(&self, path: &str) -> Option<&StoredFile> {
        let found = follow_links(
            path,
            |p| self.stored.contains_key(p),
            |p| self.links.get(p).cloned(),
        )?;
        self.stored.get(&found)
    }
}

/// A non-blob file being written: its digest is the store's to compute.
pub(super) struct FileIngest {
    name: String,
    size: u64,
    offset: u64,
    head: Vec<u8>,
    writer: Option<NamespacedWriter>,
}

impl FileIngest {
    /// Opens an ingest `tar-<name>` of `size` bytes in `ns` under `lease`.
    pub async fn open(
        content: &NamespacedContent,
        ns: &str,
        lease: Option<&str>,
        name: String,
        size: u64,
    ) -> Result<Self, TransferServiceError> {
        let (c, ns, lease, reference) = (
            content.clone(),
            ns.to_owned(),
            lease.map(str::to_owned),
            format!("tar-{name}"),
        );
        let writer =
            crate::blocking::run(move || c.writer(&ns, &reference, size, None, lease.as_deref()))
                .await
                .map_err(|s| bad(format!("{name}: {}", s.message())))?
                .map_err(|e| store_err(&name, berth_transfer::StoreError::local(e)))?;
        Ok(Self {
            name,
            size,
            offset: 0,
            head: Vec::new(),
            writer: Some(writer),
        })
    }

    /// Its ingest reference; the writer goes with `self`.
    pub fn reference(self) -> String {
        format!("tar-{}", self.name)
    }

    /// Appends `data`.
    pub async fn write(&mut self, data: Vec<u8>) -> Result<(), TransferServiceError> {
        if self.head.len() < 4 {
            let take = (4 - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
        }
        let Some(mut w) = self.writer.take() else {
            return Ok(());
        };
        let offset = self.offset;
        let (w, written) = crate::blocking::run(move || {
            let r = w.write_at(offset, &data);
            (w, r)
        })
        .await
        .map_err(|s| bad(format!("{}: {}", self.name, s.message())))?;
        self.offset =
            written.map_err(|e| store_err(&self.name, berth_transfer::StoreError::local(e)))?;
        self.writer = Some(w);
        Ok(())
    }

    /// Commits what was written; returns the stored file.
    pub async fn commit(mut self) -> Result<(String, StoredFile), TransferServiceError> {
        let name = self.name.clone();
        let w = self
            .writer
            .take()
            .ok_or_else(|| bad(format!("{name}: no writer")))?;
        let size = self.size;
        let digest = w.digest().to_string();
        let committed = crate::blocking::run(move || w.commit(size, None, BTreeMap::new()))
            .await
            .map_err(|s| bad(format!("{name}: {}", s.message())))?;
        match committed {
            Ok(_) => {}
            Err(e)
                if berth_registry::Classify::kind(&e)
                    == berth_registry::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(store_err(&name, berth_transfer::StoreError::local(e))),
        }
        let file = StoredFile {
            digest,
            size,
            compressed: is_compressed(&self.head),
        };
        Ok((name, file))
    }
}

/// Writes the manifests and the index of the Docker archive whose `manifest.json` is
/// `manifest` and whose files are `files`; returns the index.
pub(super) async fn write_index(
    content: &dyn ContentStore,
    cx: &Cx,
    manifest: &[u8],
    files: &Files,
) -> Result<Descriptor, TransferServiceError> {
    let images = parse_docker_manifest(manifest).map_err(bad)?;
    let mut entries = Vec::with_capacity(images.len());
    for image in images {
        let config = files
            .get(&image.config)
            .ok_or_else(|| bad(format!("image config {:?} not found", image.config)))?;
        let layers = image
            .layers
            .iter()
            .map(|path| {
                files
                    .get(path)
                    .cloned()
                    .ok_or_else(|| bad(format!("layer {path:?} not found")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config_bytes = content
            .read(cx, &config.digest)
            .await
            .map_err(|e| store_err(&image.config, e))?;
        let parsed = parse_config(&config_bytes, &config.digest)
            .map_err(|e| bad(format!("image config {:?}: {e}", image.config)))?;
        let manifest = write_json(
            content,
            cx,
            docker_manifest_json(config, &layers),
            media_type::DOCKER_MANIFEST,
        )
        .await?;
        entries.push(DockerEntry {
            digest: manifest.digest,
            size: manifest.size,
            os: parsed.os,
            architecture: parsed.architecture,
            repo_tags: image.repo_tags,
        });
    }
    let index = docker_index_json(&entries).map_err(bad)?;
    write_json(content, cx, index, media_type::OCI_INDEX).await
}

/// Writes the JSON `bytes` under `manifest-<digest>`.
async fn write_json(
    content: &dyn ContentStore,
    cx: &Cx,
    bytes: Vec<u8>,
    media_type: &str,
) -> Result<Descriptor, TransferServiceError> {
    let digest = sha256_digest(&bytes);
    let desc = Descriptor::new(media_type, &digest, bytes.len() as u64);
    let reference = format!("manifest-{digest}");
    put_bytes(content, cx, &reference, &desc, &bytes)
        .await
        .map_err(|e| store_err(&reference, e))?;
    Ok(desc)
}
