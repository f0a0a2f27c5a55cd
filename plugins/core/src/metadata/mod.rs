//! The metadata store: one sled database holding every namespaced record (see the key schema in
//! the crate docs).

mod namespaces;
pub mod plugin;

use std::path::Path;

use crate::error::{storage, MetadataError};

pub use namespaces::Namespace;

/// Tree names, one per object kind.
pub(crate) mod trees {
    /// Namespace records.
    pub const NAMESPACES: &str = "namespaces";
}

/// The metadata database.
#[derive(Debug, Clone)]
pub struct MetadataStore {
    db: sled::Db,
    namespaces: sled::Tree,
}

impl MetadataStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<MetadataStore, MetadataError> {
        let db = sled::Config::new()
            .path(dir.join("meta.db"))
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(storage("open"))?;
        let namespaces = db.open_tree(trees::NAMESPACES).map_err(storage("open"))?;
        Ok(MetadataStore { db, namespaces })
    }

    /// Makes every completed transaction durable. Called before a mutating RPC returns.
    pub(crate) fn flush(&self) -> Result<(), MetadataError> {
        self.db.flush().map_err(storage("flush"))?;
        Ok(())
    }
}

/// Joins key parts with the 0x00 separator the schema uses.
#[allow(dead_code)] // used by the object kinds that land with later issues
pub(crate) fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}
