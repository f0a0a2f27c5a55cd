//! Helpers shared by the record kinds: JSON records inside sled transactions.

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::error::MetadataError;

pub(crate) type TxResult<T> = Result<T, ConflictableTransactionError<MetadataError>>;

/// Aborts the transaction with `e`.
pub(crate) fn abort<T>(e: MetadataError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Decodes a stored record, naming its key when it is corrupt.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, MetadataError> {
    serde_json::from_slice(bytes).map_err(|source| MetadataError::Corrupt {
        key: format!("{what}/{}", String::from_utf8_lossy(key).replace('\0', "/")),
        source,
    })
}

/// Reads a record inside a transaction.
pub(crate) fn read<T: DeserializeOwned>(
    tree: &TransactionalTree,
    what: &str,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(bytes) => decode(what, key, &bytes)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
    }
}

/// Writes a record inside a transaction.
pub(crate) fn write<T: Serialize>(
    tree: &TransactionalTree,
    key: &[u8],
    record: &T,
) -> TxResult<()> {
    let bytes = serde_json::to_vec(record).expect("metadata records serialize");
    tree.insert(key, bytes)?;
    Ok(())
}

/// Turns a transaction's outcome into the store's error.
pub(crate) fn finish<T>(
    result: Result<T, TransactionError<MetadataError>>,
) -> Result<T, MetadataError> {
    result.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(source) => MetadataError::Storage {
            op: "transaction",
            source,
        },
    })
}
