//! OCI layout tar archives: scanning one for import (what is where in the file) and writing one
//! for export (containerd `images/archive/importer.go`, `exporter.go`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use berth_transfer::archive::{clean_name, follow_links, link_target};

use crate::oci::{Descriptor, Index};

/// The `oci-layout` file name and the only layout version accepted.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";

/// A regular file inside the archive: its cleaned path and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarFile {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// What an archive holds: the layout version (OCI), Docker's `manifest.json`, every other
/// regular file, and the symbolic links (newer `docker save` links a layer tar it already has).
#[derive(Debug, Default)]
pub struct Scan {
    pub layout_version: Option<String>,
    pub docker_manifest: Option<TarFile>,
    pub files: Vec<TarFile>,
    /// Link path → the path it points at (cleaned, relative to the archive root).
    pub links: Vec<(String, String)>,
}

/// The kind of archive, with the file the import starts from.
#[derive(Debug, Clone, Copy)]
pub enum Format<'a> {
    /// An OCI layout: its `index.json`.
    Oci(&'a TarFile),
    /// A Docker archive (`docker save`): its `manifest.json`.
    Docker(&'a TarFile),
}

#[derive(Deserialize)]
struct Layout {
    #[serde(rename = "imageLayoutVersion")]
    version: String,
}

/// Reads the archive's headers, noting the position of each regular file.
pub fn scan(reader: impl Read) -> Result<Scan> {
    let mut archive = tar::Archive::new(reader);
    let mut scan = Scan::default();
    for entry in archive.entries().context("cannot read the archive")? {
        let mut entry = entry.context("cannot read an archive entry")?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            let name = clean_name(&entry.path()?.to_string_lossy());
            if let Some(target) = entry.link_name()? {
                let target = link_target(&name, &target.to_string_lossy());
                scan.links.push((name, target));
            }
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let name = clean_name(&entry.path()?.to_string_lossy());
        let size = entry.size();
        match name.as_str() {
            OCI_LAYOUT_FILE => {
                let mut text = Vec::new();
                entry.read_to_end(&mut text)?;
                let layout: Layout = serde_json::from_slice(&text)
                    .with_context(|| format!("untar oci layout {name:?}"))?;
                scan.layout_version = Some(layout.version);
            }
            "manifest.json" => {
                scan.docker_manifest = Some(TarFile {
                    name,
                    offset: entry.raw_file_position(),
                    size,
                });
            }
            _ => scan.files.push(TarFile {
                name,
                offset: entry.raw_file_position(),
                size,
            }),
        }
    }
    Ok(scan)
}

impl Scan {
    /// Checks this is an archive ctr can import: an OCI layout (its `index.json`), or without
    /// `oci-layout`, a Docker archive (its `manifest.json`).
    pub fn format(&self) -> Result<Format<'_>> {
        match (self.layout_version.as_deref(), &self.docker_manifest) {
            (Some(OCI_LAYOUT_VERSION), _) => self
                .files
                .iter()
                .find(|f| f.name == "index.json")
                .map(Format::Oci)
                .with_context(|| format!("missing index.json in OCI layout {OCI_LAYOUT_VERSION}")),
            (Some(other), _) => bail!("unsupported OCI version {other}"),
            (None, Some(manifest)) => Ok(Format::Docker(manifest)),
            (None, None) => bail!("unrecognized image format: no oci-layout file"),
        }
    }

    /// The regular file at `path`, following the archive's symbolic links.
    pub fn file(&self, path: &str) -> Option<&TarFile> {
        let found = follow_links(
            path,
            |p| self.files.iter().any(|f| f.name == p),
            |p| {
                self.links
                    .iter()
                    .find(|(l, _)| l == p)
                    .map(|(_, t)| t.clone())
            },
        )?;
        self.files.iter().find(|f| f.name == found)
    }
}

/// The image name for a manifest in an imported index (containerd `imageName`): the
/// `io.containerd.image.name` annotation, else the translated ref name.
pub fn image_name(desc: &Descriptor, prefix: &str, filter: bool) -> Option<String> {
    berth_transfer::archive::image_name(&desc.annotations, prefix, filter)
}

/// Writes an OCI layout tar: `oci-layout`, the blobs, then `index.json`.
pub struct Writer<W: Write> {
    builder: tar::Builder<W>,
}

impl<W: Write> std::fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("archive::Writer")
    }
}

impl<W: Write> Writer<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Result<Self> {
        let mut writer = Self {
            builder: tar::Builder::new(out),
        };
        writer.add(
            OCI_LAYOUT_FILE,
            format!("{{\"imageLayoutVersion\":\"{OCI_LAYOUT_VERSION}\"}}").as_bytes(),
        )?;
        Ok(writer)
    }

    /// Adds a file with fixed owner and mode.
    fn add(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o444);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        self.builder
            .append_data(&mut header, path, data)
            .with_context(|| format!("cannot write {path} to the archive"))
    }

    /// Adds `blobs/<alg>/<hex>`.
    pub fn blob(&mut self, digest: &str, data: &[u8]) -> Result<()> {
        let (alg, hex) = digest
            .split_once(':')
            .with_context(|| format!("invalid digest {digest:?}"))?;
        self.add(&format!("blobs/{alg}/{hex}"), data)
    }

    /// Adds `index.json` and finishes the archive.
    pub fn finish(mut self, index: &Index) -> Result<W> {
        let text = serde_json::to_vec(index)?;
        self.add("index.json", &text)?;
        self.builder
            .into_inner()
            .context("cannot finish the archive")
    }
}

/// Opens an archive for reading: a file path, or `-` for stdin spooled to a temporary file
/// (import needs to seek back to each blob).
pub fn open_input(path: &str) -> Result<(File, Option<std::path::PathBuf>)> {
    if path != "-" {
        let file = File::open(path).with_context(|| format!("cannot open {path}"))?;
        return Ok((file, None));
    }
    let spool = std::env::temp_dir().join(format!(
        "berth-import-{}-{}",
        std::process::id(),
        crate::timefmt::now_nanos()
    ));
    let mut out =
        File::create(&spool).with_context(|| format!("cannot create {}", spool.display()))?;
    io::copy(&mut io::stdin().lock(), &mut out).context("cannot read the archive from stdin")?;
    let file = File::open(&spool)?;
    Ok((file, Some(spool)))
}

/// Removes a spool file made by [`open_input`].
pub fn remove_spool(spool: Option<&Path>) {
    if let Some(path) = spool {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use berth_transfer::archive::translate_ref;
    use berth_wellknown::annotation;

    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn scan_finds_layout_index_and_blob_positions() {
        let bytes = tar_of(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("./index.json", b"{}"),
            ("blobs/sha256/abcd", b"hello"),
        ]);
        let scan = scan(&bytes[..]).unwrap();
        assert_eq!(scan.layout_version.as_deref(), Some("1.0.0"));
        assert!(matches!(scan.format().unwrap(), Format::Oci(f) if f.name == "index.json"));
        let blob = &scan.files[1];
        assert_eq!(blob.name, "blobs/sha256/abcd");
        let start = usize::try_from(blob.offset).unwrap();
        assert_eq!(&bytes[start..start + 5], b"hello");
    }

    #[test]
    fn scan_tells_docker_archives_and_refuses_other_formats() {
        let docker = tar_of(&[("manifest.json", b"[]"), ("a/layer.tar", b"x")]);
        let scanned = scan(&docker[..]).unwrap();
        assert!(
            matches!(scanned.format().unwrap(), Format::Docker(f) if f.name == "manifest.json")
        );
        assert_eq!(scanned.file("./a/layer.tar").unwrap().size, 1);
        assert!(scanned.file("b/layer.tar").is_none());
        let bad = tar_of(&[("oci-layout", br#"{"imageLayoutVersion":"2.0.0"}"#)]);
        let err = scan(&bad[..]).unwrap().format().unwrap_err();
        assert_eq!(err.to_string(), "unsupported OCI version 2.0.0");
        let empty = tar_of(&[("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)]);
        assert!(scan(&empty[..]).unwrap().format().is_err());
        let neither = tar_of(&[("x", b"y")]);
        let err = scan(&neither[..]).unwrap().format().unwrap_err();
        assert!(
            err.to_string().contains("unrecognized image format"),
            "{err}"
        );
    }

    #[test]
    fn names_follow_containerd_translators() {
        assert_eq!(
            translate_ref("import-2024-01-01", false, "latest").unwrap(),
            "import-2024-01-01:latest"
        );
        assert_eq!(
            translate_ref("foo/bar", false, "docker.io/x:1").unwrap(),
            "docker.io/x:1"
        );
        assert_eq!(translate_ref("foo/bar", true, "docker.io/x:1"), None);
        assert_eq!(
            translate_ref("foo/bar", true, "foo/bar:1").unwrap(),
            "foo/bar:1"
        );
        assert_eq!(translate_ref("foo/bar", true, "foo/barx:1"), None);
        let mut desc = Descriptor::default();
        desc.annotations
            .insert(annotation::REF_NAME.into(), "v1".into());
        assert_eq!(image_name(&desc, "p", false).unwrap(), "p:v1");
        desc.annotations.insert(
            annotation::IMAGE_NAME.into(),
            "docker.io/library/bb:latest".into(),
        );
        assert_eq!(
            image_name(&desc, "p", true).unwrap(),
            "docker.io/library/bb:latest"
        );
    }

    #[test]
    fn writer_output_scans_back() {
        let mut w = Writer::new(Vec::new()).unwrap();
        w.blob("sha256:00ff", b"data").unwrap();
        let index = Index {
            schema_version: 2,
            ..Default::default()
        };
        let bytes = w.finish(&index).unwrap();
        let scan = scan(&bytes[..]).unwrap();
        assert_eq!(scan.layout_version.as_deref(), Some("1.0.0"));
        let names: Vec<_> = scan.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["blobs/sha256/00ff", "index.json"]);
    }
}
