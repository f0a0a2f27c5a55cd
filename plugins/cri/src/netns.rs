//! Network namespaces created and pinned (bind-mounted) under the CRI state dir.
