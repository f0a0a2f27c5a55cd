//! Runtime v2 manager.
