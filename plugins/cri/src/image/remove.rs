//! RemoveImage.

use berth_proto::runtime::v1::{RemoveImageRequest, RemoveImageResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// RemoveImage.
pub async fn remove_image(_cri: &Cri, _req: RemoveImageRequest) -> Result<RemoveImageResponse> {
    Err(CriError::NotImplemented("RemoveImage"))
}
