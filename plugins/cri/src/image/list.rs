//! ListImages.

use berth_proto::runtime::v1::{ListImagesRequest, ListImagesResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// ListImages.
pub async fn list_images(_cri: &Cri, _req: ListImagesRequest) -> Result<ListImagesResponse> {
    Err(CriError::NotImplemented("ListImages"))
}
