//! Finding a local image by any name the kubelet uses (tag, digest, image id) and reading its
//! config: what the sandbox and container code need to start from an image.
