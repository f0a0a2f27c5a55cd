//! PullImage.

use berth_proto::runtime::v1::{PullImageRequest, PullImageResponse};

use crate::error::{CriError, Result};
use crate::service::Cri;

/// PullImage.
pub async fn pull_image(_cri: &Cri, _req: PullImageRequest) -> Result<PullImageResponse> {
    Err(CriError::NotImplemented("PullImage"))
}
