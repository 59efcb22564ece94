//! Single-writer roles (GC): a lease row per role with a fencing epoch. A node takes an
//! expired (or its own) lease, renews it while it works, and every write the role makes checks
//! in the same transaction that the lease is still its own with the same epoch, so a paused
//! holder that wakes up after losing the lease cannot write.

use serde::Serialize;

/// A held lease: the role, this node, and the epoch it was granted with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The role (`gc`).
    pub role: String,
    /// The holder (this node's name).
    pub holder: String,
    /// The fencing token: grows each time the lease changes hands.
    pub epoch: i64,
}

/// Why a lease was not granted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    /// Another live node holds it.
    #[error("node {holder} holds the {role} lease (for {secs:.0} s more unless it renews it)")]
    Held {
        /// Role.
        role: String,
        /// Holder.
        holder: String,
        /// Seconds until it expires.
        secs: f64,
    },
    /// Postgres is unreachable.
    #[error("postgres: {0}")]
    Unavailable(String),
}

pub(crate) const ACQUIRE: &str = "INSERT INTO cluster_leases (role, holder, epoch, expires_at) \
     VALUES ($1, $2, 1, now() + make_interval(secs => $3)) \
     ON CONFLICT (role) DO UPDATE SET holder = EXCLUDED.holder, epoch = cluster_leases.epoch + 1, \
         expires_at = EXCLUDED.expires_at \
     WHERE cluster_leases.expires_at < now() OR cluster_leases.holder = EXCLUDED.holder \
     RETURNING epoch";
pub(crate) const HOLDER: &str =
    "SELECT holder, extract(epoch FROM expires_at - now())::float8 FROM cluster_leases WHERE role = $1";
pub(crate) const RENEW: &str = "UPDATE cluster_leases SET expires_at = now() + make_interval(secs => $4) \
     WHERE role = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()";
pub(crate) const RELEASE: &str =
    "UPDATE cluster_leases SET expires_at = now() WHERE role = $1 AND holder = $2 AND epoch = $3";
pub(crate) const FENCE: &str = "SELECT 1 FROM cluster_leases \
     WHERE role = $1 AND holder = $2 AND epoch = $3 AND expires_at > now() FOR SHARE";

/// Inside a transaction: fail with [`crate::CommitError::Fenced`] unless `lease` is still held
/// with its epoch (the row stays locked `FOR SHARE` until the transaction ends, so a takeover
/// waits for it).
pub(crate) async fn check(tx: &tokio_postgres::Transaction<'_>, lease: &Lease) -> Result<(), crate::CommitError> {
    let rows = tx
        .query(FENCE, &[&lease.role, &lease.holder, &lease.epoch])
        .await
        .map_err(|e| crate::CommitError::Unavailable(e.to_string()))?;
    if rows.is_empty() {
        return Err(crate::CommitError::Fenced(lease.role.clone()));
    }
    Ok(())
}
