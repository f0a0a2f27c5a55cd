//! `berth images import IN`: an OCI layout tar, or a Docker archive (`docker save`, its index
//! made by [`super::docker`]), into the content store under a lease, GC labels on index and
//! manifests, image records from the index annotations, then unpack (containerd
//! `Client.Import` + `archive.ImportIndex`; call sequence in CONFORMANCE §8).

use std::collections::{BTreeSet, HashMap};
use std::io::SeekFrom;

use anyhow::{bail, Context as _, Result};
use berth_proto::containerd::services::images::v1::{
    CreateImageRequest, Image, UpdateImageRequest,
};
use berth_proto::containerd::types::transfer::UnpackConfiguration;
use berth_wellknown::media_type;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::Code;

use super::{docker, platform_arg, platform_filter, unpack_image};
use crate::archive::{self, Scan};
use crate::client::content::{self, WriteSpec};
use crate::client::images::{self as img, PlatformFilter};
use crate::client::leases::TempLease;
use crate::client::transfer as remote;
use crate::client::Client;
use crate::error::{Object, RpcResultExt};
use crate::oci::{self, Descriptor, Index};
use crate::timefmt;

/// Arguments of `images import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base image name for tag-only references; when given, only images with this prefix are imported.
    #[arg(long, default_value = "")]
    pub base_name: String,
    /// Also create `<base>@<digest>` images.
    #[arg(long)]
    pub digests: bool,
    /// With --digests, skip digest images for manifests that are named.
    #[arg(long)]
    pub skip_digest_for_named: bool,
    /// Keep the index as an image with this name.
    #[arg(long, default_value = "")]
    pub index_name: String,
    /// Import content for all platforms.
    #[arg(long)]
    pub all_platforms: bool,
    /// Import content for one platform (`os/arch[/variant]`).
    #[arg(long)]
    pub platform: Option<String>,
    /// Do not unpack the images.
    #[arg(long)]
    pub no_unpack: bool,
    /// Snapshotter to unpack on.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER")]
    pub snapshotter: Option<String>,
    /// `--local=false`: the daemon's Transfer service imports the archive streamed to it.
    #[command(flatten)]
    pub local: LocalFlag,
    /// The archive (`-` for stdin).
    #[arg(value_name = "IN")]
    pub input: String,
}

/// ctr 1.7's `--local[=BOOL]` of `images import` and `export`: work here, through the daemon's
/// stores (the default), or (`--local=false`) have the daemon's Transfer service do it over a
/// stream.
#[derive(Debug, clap::Args)]
pub struct LocalFlag {
    /// Work here (the default); `--local=false` has the daemon's Transfer service do it.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub local: bool,
}

/// Imports, then unpacks unless `--no-unpack`.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    if args.skip_digest_for_named && !args.digests {
        bail!("--skip-digest-for-named must be specified with --digests option");
    }
    let input = args.input.clone();
    let (file, spool) = tokio::task::spawn_blocking(move || archive::open_input(&input)).await??;
    if !args.local.local {
        let result = daemon_import(client, &args, tokio::fs::File::from_std(file)).await;
        archive::remove_spool(spool.as_deref());
        return result;
    }
    let scanned = {
        let file = file.try_clone()?;
        tokio::task::spawn_blocking(move || archive::scan(file)).await?
    };
    let result = async {
        let scan = scanned?;
        let images = import(client, &args, tokio::fs::File::from_std(file), &scan).await?;
        if !args.no_unpack {
            let platform = platform_arg(args.platform.as_deref())?;
            let snapshotter = client.snapshotter(args.snapshotter.as_deref()).await?;
            for image in &images {
                let digest = image
                    .target
                    .as_ref()
                    .map(|t| t.digest.as_str())
                    .unwrap_or("");
                print!("unpacking {} ({digest})...", image.name);
                use std::io::Write as _;
                std::io::stdout().flush().ok();
                unpack_image(client, image, &platform, &snapshotter).await?;
                println!("done");
            }
        }
        Ok(())
    }
    .await;
    archive::remove_spool(spool.as_deref());
    result
}

/// `--local=false`: the daemon imports the archive streamed to its Transfer service and, unless
/// `--no-unpack`, unpacks the platform's images into the snapshotter (an `unpacks` entry, as
/// containerd 2's ctr and nerdctl's `load` ask).
async fn daemon_import(client: &Client, args: &Args, file: tokio::fs::File) -> Result<()> {
    let platform = platform_arg(args.platform.as_deref())?;
    let api_platform = berth_proto::containerd::types::Platform {
        os: platform.os.clone(),
        architecture: platform.architecture.clone(),
        variant: platform.variant.clone(),
    };
    let platforms = if args.all_platforms {
        Vec::new()
    } else {
        vec![api_platform.clone()]
    };
    let prefix = if args.base_name.is_empty() {
        let (now, _) = timefmt::now();
        format!("import-{}", &timefmt::rfc3339(now)[..10])
    } else {
        args.base_name.clone()
    };
    let unpacks = if args.no_unpack {
        Vec::new()
    } else {
        vec![UnpackConfiguration {
            platform: Some(api_platform),
            snapshotter: client.snapshotter(args.snapshotter.as_deref()).await?,
        }]
    };
    let spec = remote::RemoteImport {
        index_name: args.index_name.clone(),
        prefix,
        digests: args.digests,
        platforms,
        unpacks,
    };
    let unpacked = !spec.unpacks.is_empty();
    let saved = remote::import(client, &spec, file, |_| {})
        .await
        .map_err(|status| anyhow::Error::msg(status.message().to_owned()))?;
    for name in saved {
        let image = img::get(client, &name).await?;
        let digest = image
            .target
            .as_ref()
            .map(|t| t.digest.clone())
            .unwrap_or_default();
        if unpacked {
            println!("{name} ({digest}) imported and unpacked by the daemon");
        } else {
            println!("{name} ({digest}) imported");
        }
    }
    Ok(())
}

/// Writes the blobs and image records under a temporary lease.
async fn import(
    client: &Client,
    args: &Args,
    file: tokio::fs::File,
    scan: &Scan,
) -> Result<Vec<Image>> {
    let format = scan.format()?;
    let lease = TempLease::new(client).await?;
    let result = import_leased(&lease.client, args, file, scan, format).await;
    let done = lease.done().await;
    let images = result?;
    done?;
    Ok(images)
}

async fn import_leased(
    client: &Client,
    args: &Args,
    mut file: tokio::fs::File,
    scan: &Scan,
    format: archive::Format<'_>,
) -> Result<Vec<Image>> {
    let mut digests: HashMap<String, String> = HashMap::new();
    for entry in &scan.files {
        file.seek(SeekFrom::Start(entry.offset)).await?;
        let reader = (&mut file).take(entry.size);
        let spec = WriteSpec {
            reference: format!("tar-{}", entry.name),
            total: i64::try_from(entry.size)?,
            ..Default::default()
        };
        let written = content::write_blob(client, &spec, reader)
            .await
            .with_context(|| format!("failed to ingest {:?}", entry.name))?;
        digests.insert(entry.name.clone(), written.digest);
    }
    let index_desc = match format {
        archive::Format::Oci(index_file) => Descriptor {
            media_type: media_type::OCI_INDEX.to_owned(),
            digest: digests[&index_file.name].clone(),
            size: i64::try_from(index_file.size)?,
            ..Default::default()
        },
        archive::Format::Docker(manifest) => {
            docker::index(client, &mut file, scan, &digests, manifest).await?
        }
    };

    let filter = if args.all_platforms {
        PlatformFilter::All
    } else {
        platform_filter(args.platform.as_deref(), false)?
    };
    let (prefix, filter_prefix) = if args.base_name.is_empty() {
        let (now, _) = timefmt::now();
        (format!("import-{}", &timefmt::rfc3339(now)[..10]), false)
    } else {
        (args.base_name.clone(), true)
    };

    let mut images: Vec<Image> = Vec::new();
    let mut push = |name: String, target: &Descriptor| {
        images.push(Image {
            name,
            target: Some(target.into()),
            ..Default::default()
        });
    };
    if !args.index_name.is_empty() {
        push(args.index_name.clone(), &index_desc);
    }

    // Walk from the index: name images after the root's manifests, label every parent with its
    // children (containerd `SetChildrenLabels`).
    let mut stack = vec![index_desc.clone()];
    let mut seen = BTreeSet::new();
    while let Some(desc) = stack.pop() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        let children = if desc.digest == index_desc.digest {
            let index: Index = img::read_json(client, &desc).await?;
            for m in &index.manifests {
                let name = archive::image_name(m, &prefix, filter_prefix);
                if let Some(name) = &name {
                    push(name.clone(), m);
                }
                if args.digests && !(args.skip_digest_for_named && name.is_some()) {
                    push(format!("{prefix}@{}", m.digest), m);
                }
            }
            index
                .manifests
                .into_iter()
                .filter(|m| match (&filter, &m.platform) {
                    (PlatformFilter::Only(p), Some(mp)) => p.matches(mp),
                    _ => true,
                })
                .collect()
        } else {
            img::children(client, &desc, &filter).await?
        };
        if !children.is_empty() {
            content::update_labels(client, &desc.digest, oci::children_gc_labels(&children))
                .await?;
        }
        stack.extend(children.into_iter().rev());
    }
    if seen.len() <= 1 {
        bail!("no images for this platform in the archive (empty walk)");
    }

    let mut stored = Vec::with_capacity(images.len());
    for image in images {
        let name = image.name.clone();
        let updated = client
            .images()
            .update(client.req(UpdateImageRequest {
                image: Some(image.clone()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["target".to_owned()],
                }),
            }))
            .await;
        let image = match updated {
            Ok(r) => r.into_inner().image,
            Err(s) if s.code() == Code::NotFound => {
                client
                    .images()
                    .create(client.req(CreateImageRequest { image: Some(image) }))
                    .await
                    .rpc(client, "create", Object::image(&name))?
                    .into_inner()
                    .image
            }
            Err(s) => return Err(s).rpc(client, "update", Object::image(&name)),
        };
        stored.push(image.with_context(|| format!("image {name:?}: empty reply"))?);
    }
    Ok(stored)
}
