//! `berth tasks pause|resume CONTAINER`: Containers.Get, Tasks.Get, Pause / Resume.

use anyhow::Result;
use berth_proto::containerd::services::tasks::v1::{PauseTaskRequest, ResumeTaskRequest};

use crate::client::{tasks, Client};
use crate::error::RpcResultExt;

/// Arguments of `tasks pause` and `tasks resume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Pauses the task.
pub async fn pause(client: &Client, args: Args) -> Result<()> {
    tasks::container(client, &args.id).await?;
    tasks::get(client, &args.id, "").await?;
    client
        .tasks()
        .pause(client.req(PauseTaskRequest {
            container_id: args.id.clone(),
        }))
        .await
        .rpc(client, "pause", tasks::task_object(&args.id, ""))?;
    Ok(())
}

/// Resumes the task.
pub async fn resume(client: &Client, args: Args) -> Result<()> {
    tasks::container(client, &args.id).await?;
    tasks::get(client, &args.id, "").await?;
    client
        .tasks()
        .resume(client.req(ResumeTaskRequest {
            container_id: args.id.clone(),
        }))
        .await
        .rpc(client, "resume", tasks::task_object(&args.id, ""))?;
    Ok(())
}
