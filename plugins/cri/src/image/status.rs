//! ImageStatus, and the CRI form of a local image that ListImages shares (containerd
//! `pkg/cri/server/image_status.go`).

use std::collections::HashMap;

use berth_proto::runtime::v1::{
    Image, ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value,
};
use serde::Serialize;

use super::lookup::{all_images, find, LocalImage};
use super::reference::{classify, Named, RecordName};
use crate::error::{CriError, Result};
use crate::service::Cri;

/// ImageStatus: an image that is not there is an empty answer (`image` unset), not an error,
/// as the kubelet expects.
#[tracing::instrument(skip_all, fields(image = req.image.as_ref().map(|i| i.image.as_str())))]
pub async fn image_status(cri: &Cri, req: ImageStatusRequest) -> Result<ImageStatusResponse> {
    let reference = req.image.map(|i| i.image).unwrap_or_default();
    if reference.is_empty() {
        return Err(CriError::invalid(
            "image.image",
            "the image reference is empty",
        ));
    }
    let image = match find(all_images(cri).await?, &reference) {
        Ok(image) => image,
        Err(CriError::NotFound { .. }) => return Ok(ImageStatusResponse::default()),
        Err(e) => return Err(e),
    };
    let info = if req.verbose {
        verbose_info(&image)
    } else {
        HashMap::new()
    };
    Ok(ImageStatusResponse {
        image: Some(to_cri_image(cri, &image)),
        info,
    })
}

/// The CRI `Image` of a local image: its id, tags and digests from its records, size, the
/// user of its config and whether it is the pinned sandbox image.
pub(crate) fn to_cri_image(cri: &Cri, image: &LocalImage) -> Image {
    let mut repo_tags = Vec::new();
    let mut repo_digests = Vec::new();
    for r in &image.references {
        match classify(r) {
            RecordName::Tag(t) => repo_tags.push(t),
            RecordName::Digest(d) => repo_digests.push(d),
            RecordName::Other => {}
        }
    }
    let user = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    let (uid, username) = user_from_image(&user);
    let pinned = Named::parse(&cri.config.sandbox_image, "sandbox_image")
        .map(|n| image.references.contains(&n.full()))
        .unwrap_or(false);
    Image {
        id: image.id.clone(),
        repo_tags,
        repo_digests,
        size: image.size,
        uid: uid.map(|value| Int64Value { value }),
        username,
        spec: Some(ImageSpec {
            image: image.id.clone(),
            annotations: HashMap::new(),
        }),
        pinned,
    }
}

/// The uid (numeric `USER`) or user name (named `USER`) of an image config's `USER`, its group
/// part dropped (containerd's `getUserFromImage`).
pub(crate) fn user_from_image(user: &str) -> (Option<i64>, String) {
    if user.is_empty() {
        return (None, String::new());
    }
    let name = user.split(':').next().unwrap_or(user);
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_owned()),
    }
}

/// The verbose `info` map: `{"info": {"chainID": ..., "imageSpec": <config>}}` as containerd.
fn verbose_info(image: &LocalImage) -> HashMap<String, String> {
    #[derive(Serialize)]
    struct Info<'a> {
        #[serde(rename = "chainID")]
        chain_id: &'a str,
        #[serde(rename = "imageSpec")]
        image_spec: &'a oci_spec::image::ImageConfiguration,
    }
    let info = Info {
        chain_id: &image.chain_id,
        image_spec: &image.config,
    };
    let text = serde_json::to_string(&info).unwrap_or_else(|e| e.to_string());
    HashMap::from([("info".to_owned(), text)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_follow_get_user_from_image() {
        assert_eq!(user_from_image(""), (None, String::new()));
        assert_eq!(user_from_image("1000"), (Some(1000), String::new()));
        assert_eq!(user_from_image("1000:50"), (Some(1000), String::new()));
        assert_eq!(user_from_image("nobody"), (None, "nobody".to_owned()));
        assert_eq!(user_from_image("www:www"), (None, "www".to_owned()));
    }
}
