//! ImageFsInfo.

use berth_proto::runtime::v1::{ImageFsInfoRequest, ImageFsInfoResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// ImageFsInfo.
pub async fn image_fs_info(_cri: &Cri, _req: ImageFsInfoRequest) -> Result<ImageFsInfoResponse> {
    Err(CriError::NotImplemented("ImageFsInfo"))
}
