//! `berth tasks checkpoint [--exit] CONTAINER`: Tasks.Checkpoint with runc checkpoint options;
//! prints the checkpoint's descriptors. A daemon without checkpoint support (berthd, or no
//! CRIU) answers Unimplemented, reported as "not supported".

use anyhow::{bail, Result};
use berth_proto::containerd::runc::v1::CheckpointOptions;
use berth_proto::containerd::services::tasks::v1::CheckpointTaskRequest;
use prost::Message as _;
use tonic::Code;

use crate::client::{tasks, Client};
use crate::error::RpcResultExt;

/// Flags of `tasks checkpoint`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stop the container after the checkpoint.
    #[arg(long)]
    pub exit: bool,
    /// Path to the criu image files.
    #[arg(long)]
    pub image_path: Option<String>,
    /// Path to the criu work files and logs.
    #[arg(long)]
    pub work_path: Option<String>,
    /// Container id.
    pub id: String,
}

/// Checkpoints the task.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    tasks::container(client, &args.id).await?;
    tasks::get(client, &args.id, "").await?;
    let opts = CheckpointOptions {
        exit: args.exit,
        image_path: args.image_path.clone().unwrap_or_default(),
        work_path: args.work_path.clone().unwrap_or_default(),
        ..Default::default()
    };
    let resp = client
        .tasks()
        .checkpoint(client.req(CheckpointTaskRequest {
            container_id: args.id.clone(),
            parent_checkpoint: String::new(),
            options: Some(prost_types::Any {
                type_url: "containerd.runc.v1.CheckpointOptions".to_owned(),
                value: opts.encode_to_vec(),
            }),
        }))
        .await;
    let descriptors = match resp {
        Ok(r) => r.into_inner().descriptors,
        Err(s) if s.code() == Code::Unimplemented => {
            bail!(
                "checkpoint of task {:?} is not supported by the daemon ({})",
                args.id,
                crate::error::cause(&s)
            )
        }
        Err(s) => return Err(s).rpc(client, "checkpoint", tasks::task_object(&args.id, "")),
    };
    for d in descriptors {
        println!("{} {} {}", d.media_type, d.digest, d.size);
    }
    Ok(())
}
