//! `berth images export OUT IMAGE...`: Images.Get each, read every reachable blob, write an OCI
//! layout tar client-side (containerd `archive.Export`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;

use anyhow::{Context as _, Result};
use berth_wellknown::{annotation, media_type};

use super::platform_filter;
use crate::archive::{self, Writer};
use crate::client::images as img;
use crate::client::{content, Client};
use crate::oci::Index;

/// Arguments of `images export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Export content for one platform (`os/arch[/variant]`); default: this host's.
    #[arg(long)]
    pub platform: Option<String>,
    /// Export content for all platforms.
    #[arg(long)]
    pub all_platforms: bool,
    /// Do not add a Docker-compatible manifest.json (none is written yet either way).
    #[arg(long)]
    pub skip_manifest_json: bool,
    /// Skip non-distributable (foreign) layers.
    #[arg(long)]
    pub skip_non_distributable: bool,
    /// Output file (`-` for stdout).
    #[arg(value_name = "OUT")]
    pub output: String,
    /// Images to export.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Writes the archive.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let filter = platform_filter(args.platform.as_deref(), args.all_platforms)?;
    let out: Box<dyn Write + Send> = if args.output == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            File::create(&args.output).with_context(|| format!("cannot create {}", args.output))?,
        )
    };
    let mut writer = Writer::new(out)?;
    let mut index = Index {
        schema_version: 2,
        media_type: media_type::OCI_INDEX.to_owned(),
        ..Default::default()
    };
    let mut written = BTreeSet::new();
    for name in &args.images {
        let image = img::get(client, name).await?;
        let target = img::target(&image);
        for desc in img::walk(client, &target, &filter).await? {
            if args.skip_non_distributable && desc.media_type.contains("nondistributable") {
                continue;
            }
            if !written.insert(desc.digest.clone()) {
                continue;
            }
            let data = content::read_blob(client, &desc.digest).await?;
            writer.blob(&desc.digest, &data)?;
        }
        let mut entry = target.clone();
        entry
            .annotations
            .insert(annotation::IMAGE_NAME.to_owned(), name.clone());
        entry
            .annotations
            .insert(annotation::REF_NAME.to_owned(), archive::ref_name(name));
        index.manifests.push(entry);
    }
    let mut out = writer.finish(&index)?;
    out.flush()?;
    Ok(())
}
