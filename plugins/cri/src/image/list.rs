//! ListImages: every image of namespace `k8s.io`, or the one the filter's image names.

use berth_proto::runtime::v1::{ListImagesRequest, ListImagesResponse};

use super::lookup::{all_images, find};
use super::status::to_cri_image;
use crate::error::{CriError, Result};
use crate::service::Cri;

/// ListImages.
#[tracing::instrument(skip_all)]
pub async fn list_images(cri: &Cri, req: ListImagesRequest) -> Result<ListImagesResponse> {
    let wanted = req
        .filter
        .and_then(|f| f.image)
        .map(|i| i.image)
        .filter(|i| !i.is_empty());
    let images = all_images(cri).await?;
    let images = match wanted {
        None => images,
        Some(reference) => match find(images, &reference) {
            Ok(image) => vec![image],
            Err(CriError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        },
    };
    Ok(ListImagesResponse {
        images: images.iter().map(|i| to_cri_image(cri, i)).collect(),
    })
}
