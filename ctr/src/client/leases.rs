//! Leases the client takes around multi-step work (containerd `Client.WithLease`): random id,
//! `containerd.io/gc.expire` 24 h ahead, deleted when done.

use std::collections::HashMap;

use anyhow::Result;
use berth_proto::containerd::services::leases::v1::{CreateRequest, DeleteRequest, Lease};
use berth_wellknown::label;

use super::Client;
use crate::error::{Object, RpcResultExt};

use crate::timefmt;

/// How long client leases live unless deleted (containerd's default for `WithLease`).
pub const DEFAULT_EXPIRY_SECS: i64 = 24 * 3600;

/// Base64url (with padding) of `bytes`, as Go's `base64.URLEncoding`.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A unique part as containerd's `uniquePart`/`leases.WithRandomID`: `<nanos in second>-<b64 of 3
/// random bytes>`.
pub fn unique_part() -> String {
    let (_, nanos) = timefmt::now();
    let random = uuid::Uuid::new_v4();
    format!("{nanos}-{}", base64url(&random.as_bytes()[..3]))
}

/// Labels for a lease expiring `secs` from now.
pub fn expiry_labels(secs: i64) -> HashMap<String, String> {
    let (now, _) = timefmt::now();
    HashMap::from([(label::GC_EXPIRE.to_owned(), timefmt::rfc3339(now + secs))])
}

/// Creates a lease (`id` empty: a random one) with `labels`.
pub async fn create(client: &Client, id: &str, labels: HashMap<String, String>) -> Result<Lease> {
    let id = if id.is_empty() {
        unique_part()
    } else {
        id.to_owned()
    };
    let resp = client
        .leases()
        .create(client.req(CreateRequest {
            id: id.clone(),
            labels,
        }))
        .await
        .rpc(client, "create", Object::lease(&id))?;
    Ok(resp.into_inner().lease.unwrap_or_default())
}

/// Deletes lease `id` (`sync`: wait for the garbage collection).
pub async fn delete(client: &Client, id: &str, sync: bool) -> Result<()> {
    client
        .leases()
        .delete(client.req(DeleteRequest {
            id: id.to_owned(),
            sync,
        }))
        .await
        .rpc(client, "delete", Object::lease(id))?;
    Ok(())
}

/// A temporary lease for one operation; call [`TempLease::done`] when finished.
#[derive(Debug)]
pub struct TempLease {
    pub id: String,
    /// The connection with `containerd-lease` set.
    pub client: Client,
}

impl TempLease {
    /// Creates a random lease expiring in 24 h.
    pub async fn new(client: &Client) -> Result<Self> {
        let lease = create(client, "", expiry_labels(DEFAULT_EXPIRY_SECS)).await?;
        Ok(Self {
            client: client.with_lease(&lease.id),
            id: lease.id,
        })
    }

    /// Deletes the lease; the work is referenced by labels by then.
    pub async fn done(self) -> Result<()> {
        delete(&self.client, &self.id, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_go() {
        assert_eq!(base64url(&[0x2e, 0xcb, 0x2c]), "Lsss");
        assert_eq!(base64url(b"\xfb\xff\xfe"), "-__-");
        assert_eq!(base64url(b"a"), "YQ==");
        let id = unique_part();
        let (nanos, b64) = id.split_once('-').unwrap();
        assert!(nanos.parse::<u32>().is_ok(), "{id}");
        assert_eq!(b64.len(), 4);
    }
}
