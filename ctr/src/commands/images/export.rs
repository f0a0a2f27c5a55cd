//! `berth images export OUT IMAGE...`: Images.Get each, read every reachable blob, write an OCI
//! layout tar client-side (containerd `archive.Export`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;

use anyhow::{Context as _, Result};
use berth_wellknown::{annotation, media_type};

use super::platform_filter;
use crate::archive::Writer;
use crate::client::images as img;
use crate::client::transfer as remote;
use crate::client::{content, Client};
use crate::oci::Index;
use berth_transfer::archive::oci_ref_name;

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
    /// `--local=false`: the daemon's Transfer service writes the archive (one image) to a
    /// stream.
    #[command(flatten)]
    pub local: super::import::LocalFlag,
    /// Images to export.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Writes the archive.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    if !args.local.local {
        return daemon_export(client, &args).await;
    }
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
            .insert(annotation::REF_NAME.to_owned(), oci_ref_name(name));
        index.manifests.push(entry);
    }
    let mut out = writer.finish(&index)?;
    out.flush()?;
    Ok(())
}

/// `--local=false`: the daemon writes the archive of one image to a stream into the file.
async fn daemon_export(client: &Client, args: &Args) -> Result<()> {
    let [image] = args.images.as_slice() else {
        anyhow::bail!(
            "--local=false exports one image, {} given",
            args.images.len()
        );
    };
    if args.output == "-" {
        anyhow::bail!("--local=false writes to a file, not stdout");
    }
    let platforms = match args.platform.as_deref() {
        Some(text) if !args.all_platforms => {
            let p = super::platform_arg(Some(text))?;
            vec![berth_proto::containerd::types::Platform {
                os: p.os.clone(),
                architecture: p.architecture.clone(),
                variant: p.variant.clone(),
            }]
        }
        _ => Vec::new(),
    };
    let out = tokio::fs::File::create(&args.output)
        .await
        .with_context(|| format!("cannot create {}", args.output))?;
    let spec = remote::RemoteExport {
        image: image.clone(),
        platforms,
        all_platforms: args.all_platforms,
        skip_compatibility_manifest: args.skip_manifest_json,
        skip_non_distributable: args.skip_non_distributable,
    };
    remote::export(client, &spec, out)
        .await
        .map_err(|status| anyhow::Error::msg(status.message().to_owned()))
}
