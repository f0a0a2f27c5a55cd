//! RemoveImage: every record of the image goes, whichever name the request uses; a missing
//! image is success (containerd `pkg/cri/server/image_remove.go`). Content and snapshots are
//! collected right away.

use berth_errdefs::{Classify as _, ErrorKind};
use berth_proto::runtime::v1::{RemoveImageRequest, RemoveImageResponse};

use super::lookup::{all_images, find};
use crate::blocking::blocking;
use crate::error::{CriError, Result};
use crate::service::{Cri, K8S_NAMESPACE};

/// RemoveImage.
#[tracing::instrument(skip_all, fields(image = req.image.as_ref().map(|i| i.image.as_str())))]
pub async fn remove_image(cri: &Cri, req: RemoveImageRequest) -> Result<RemoveImageResponse> {
    let reference = req.image.map(|i| i.image).unwrap_or_default();
    if reference.is_empty() {
        return Err(CriError::invalid(
            "image.image",
            "the image reference is empty",
        ));
    }
    let image = match find(all_images(cri).await?, &reference) {
        Ok(image) => image,
        Err(CriError::NotFound { .. }) => return Ok(RemoveImageResponse::default()),
        Err(e) => return Err(e),
    };
    let meta = cri.meta.clone();
    let names = image.references.clone();
    blocking(move || {
        for name in &names {
            match meta.delete_image(K8S_NAMESPACE, name) {
                Ok(()) => {}
                // Removed by someone else meanwhile.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(CriError::metadata(format!("delete image {name:?}"), e)),
            }
        }
        Ok(())
    })
    .await?;
    tracing::debug!(id = %image.id, references = ?image.references, "image removed");
    if let Some(gc) = &cri.gc {
        // Best effort, as containerd's synchronous delete: the records are gone either way.
        if let Err(e) = gc.collect_now().await {
            tracing::warn!(id = %image.id, "garbage collection after image removal failed: {e}");
        }
    }
    Ok(RemoveImageResponse::default())
}
