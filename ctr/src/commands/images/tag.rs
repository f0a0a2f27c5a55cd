//! `berth images tag SOURCE TARGET...`: Images.Get, then Images.Create per target (`--force`
//! replaces an existing one).

use anyhow::Result;
use berth_proto::containerd::services::images::v1::{
    CreateImageRequest, DeleteImageRequest, Image,
};
use tonic::Code;

use crate::client::images as img;
use crate::client::Client;
use crate::error::{Object, RpcResultExt};

/// Arguments of `images tag`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Replace an existing image with the target name.
    #[arg(long)]
    pub force: bool,
    /// Existing image.
    pub source: String,
    /// New names.
    #[arg(required = true)]
    pub targets: Vec<String>,
}

/// Creates the tags.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    let source = img::get(client, &args.source).await?;
    for target in &args.targets {
        let image = Image {
            name: target.clone(),
            labels: source.labels.clone(),
            target: source.target.clone(),
            ..Default::default()
        };
        let created = client
            .images()
            .create(client.req(CreateImageRequest {
                image: Some(image.clone()),
            }))
            .await;
        match created {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists && args.force => {
                client
                    .images()
                    .delete(client.req(DeleteImageRequest {
                        name: target.clone(),
                        sync: false,
                    }))
                    .await
                    .rpc(client, "delete", Object::image(target))?;
                client
                    .images()
                    .create(client.req(CreateImageRequest { image: Some(image) }))
                    .await
                    .rpc(client, "create", Object::image(target))?;
            }
            Err(s) => return Err(s).rpc(client, "create", Object::image(target)),
        }
        println!("{target}");
    }
    Ok(())
}
