//! Applying log entries to the local index, in log order, idempotently: the same sequence
//! applied twice (a replay after a crash) leaves the same state, and every node that applied
//! the same prefix has the same metadata.

use base64::Engine;
use berth_index::{BlobMeta, IndexError, TierState};
use berth_types::Digest;

use crate::config::Durability;
use crate::log::{Entry, Write};
use crate::Cluster;

impl Cluster {
    /// Apply one entry. Entries another node made are written as replica feed records (the
    /// S3 mirror skips them: their origin mirrors them); so are blob removals (GC removed the
    /// object already).
    pub(crate) fn apply(&self, e: &Entry) -> Result<(), IndexError> {
        let mine = e.origin == self.name;
        let replica = !mine || matches!(e.write, Write::BlobRemoved { .. });
        let run = || self.apply_write(e, mine);
        if replica {
            berth_index::as_replica(run)
        } else {
            run()
        }
    }

    fn apply_write(&self, e: &Entry, mine: bool) -> Result<(), IndexError> {
        let ix = &self.index;
        match &e.write {
            Write::BlobCommitted { digest, size } => self.ensure_blob(digest, *size, e.at_ms, mine),
            Write::BlobLinked { repo, digest, size } => {
                self.ensure_blob(digest, *size, e.at_ms, mine)?;
                ix.link_blob(repo, digest).map(|_| ())
            }
            Write::BlobUnlinked { repo, digest } => ix.unlink_blob(repo, digest).map(|_| ()),
            Write::BlobRemoved { digest } => {
                let was = ix.blob(digest)?;
                if was.is_some() {
                    ix.remove_blob(digest)?;
                }
                // A push of the same digest on this node between its file and its commit keeps
                // its file (its commit follows in the log and records it again).
                if !self.is_committing(digest) {
                    if let Err(err) = self.local.remove(digest) {
                        tracing::warn!(%digest, error = %err, "could not remove a collected blob's file");
                    }
                }
                Ok(())
            }
            Write::ManifestPut { repo, digest, record, bytes, tags } => {
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(bytes) else {
                    tracing::error!(%repo, %digest, seq = e.seq, "change log: manifest bytes undecodable; skipped");
                    return Ok(());
                };
                let mut record = record.clone();
                // A reference removed concurrently by another node (the log orders it first):
                // keep the manifest, as the origin did, with the reference marked absent.
                for _ in 0..=record.blobs.len() + record.manifests.len() {
                    match ix.put_manifest(repo, digest, &record, &bytes, tags)?.missing {
                        None => return Ok(()),
                        Some(m) => record.absent.push(m),
                    }
                }
                Ok(())
            }
            Write::TagDeleted { repo, tag } => ix.delete_tag(repo, tag).map(|_| ()),
            Write::ScanRequested { repo, digest } => ix.request_scan(repo, digest),
            Write::State { kind, key, value } => {
                match self.state_sink.get() {
                    Some(sink) => {
                        if let Err(err) = sink(*kind, key, value) {
                            tracing::error!(seq = e.seq, ?kind, %key, error = %err, "change log: node state not applied");
                        }
                    }
                    None => tracing::warn!(seq = e.seq, ?kind, "change log: no sink for node state; skipped"),
                }
                Ok(())
            }
            Write::ManifestDeleted { repo, digest } => ix.delete_manifest(repo, digest).map(|_| ()),
        }
    }

    /// Record a blob this node has not seen: local when its file is here (the origin, or a
    /// copy left from before), remote otherwise (read through from S3 on first pull).
    fn ensure_blob(&self, digest: &Digest, size: u64, at_ms: u64, mine: bool) -> Result<(), IndexError> {
        if self.index.blob(digest)?.is_some() {
            return Ok(());
        }
        let here = std::fs::metadata(self.local.path(digest)).is_ok_and(|m| m.len() == size);
        let tier = match (here, mine, self.cfg.durability) {
            // Acknowledged after the local fsync only: the tier's queue uploads it.
            (true, true, Durability::Local) => TierState::Local,
            (true, _, _) => TierState::LocalAndRemote,
            (false, _, _) => TierState::Remote,
        };
        self.index.import_blob(digest, &BlobMeta { size, created_at_ms: at_ms, tier }).map(|_| ())
    }
}
