//! ImageStatus.

use berth_proto::runtime::v1::{ImageStatusRequest, ImageStatusResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// ImageStatus.
pub async fn image_status(_cri: &Cri, _req: ImageStatusRequest) -> Result<ImageStatusResponse> {
    Err(CriError::NotImplemented("ImageStatus"))
}
