//! The node table: each node's name, upload tag and internal URL, with a heartbeat. Upload
//! ids carry their owner's tag; a request for an upload owned elsewhere is forwarded to the
//! owner's internal URL.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::Cluster;

/// The tag of a node name: the low 32 bits of its xxh3 hash. Two names with the same tag
/// cannot join the same cluster (checked at registration).
pub(crate) fn tag_of(name: &str) -> u32 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes()) as u32
}

/// A node as the others see it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// Name.
    pub name: String,
    /// Internal URL.
    pub internal_url: String,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_secs: f64,
    /// Last change-log sequence it applied (as of its heartbeat).
    pub applied_seq: u64,
}

impl Cluster {
    pub(crate) async fn register(&self, client: &deadpool_postgres::Object) -> Result<(), String> {
        let tag = i64::from(self.tag);
        let clash = client
            .query("SELECT name FROM cluster_nodes WHERE tag = $1 AND name <> $2", &[&tag, &self.name])
            .await
            .map_err(|e| e.to_string())?;
        if let Some(row) = clash.first() {
            return Err(format!(
                "cluster.node {:?} has the same upload tag as node {:?}; choose another name",
                self.name,
                row.get::<_, String>(0)
            ));
        }
        client
            .execute(
                "INSERT INTO cluster_nodes (name, tag, internal_url) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET tag = EXCLUDED.tag, internal_url = EXCLUDED.internal_url, \
                 started_at = now(), heartbeat_at = now()",
                &[&self.name, &tag, &self.cfg.internal_url],
            )
            .await
            .map_err(|e| e.to_string())?;
        self.refresh_nodes(client).await.map_err(|e| e.to_string())
    }

    async fn refresh_nodes(&self, client: &deadpool_postgres::Object) -> Result<(), tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT name, tag, internal_url, extract(epoch FROM now() - heartbeat_at)::float8, applied_seq \
                 FROM cluster_nodes",
                &[],
            )
            .await?;
        let live_after = (self.cfg.heartbeat_secs * 3) as f64;
        let mut live = 0;
        let mut map = std::collections::HashMap::new();
        for r in rows {
            let info = NodeInfo {
                name: r.get(0),
                internal_url: r.get(2),
                heartbeat_age_secs: r.get(3),
                applied_seq: r.get::<_, i64>(4) as u64,
            };
            if info.heartbeat_age_secs < live_after {
                live += 1;
            }
            map.insert(r.get::<_, i64>(1) as u32, info);
        }
        self.metrics.live_nodes.set(live);
        *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    /// The node owning uploads tagged `tag`, when it is another node known to the cluster.
    pub fn owner(&self, tag: u32) -> Option<NodeInfo> {
        if tag == self.tag {
            return None;
        }
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).get(&tag).cloned()
    }

    /// Every node, as of the last heartbeat.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut v: Vec<_> = self.nodes.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

pub(crate) async fn heartbeat(c: Arc<Cluster>) {
    let every = Duration::from_secs(c.cfg.heartbeat_secs);
    while !c.stopping() {
        tokio::time::sleep(every).await;
        if !c.registered() {
            continue;
        }
        let Ok(client) = c.pool.get().await else { continue };
        let beat = client
            .execute(
                "UPDATE cluster_nodes SET heartbeat_at = now(), applied_seq = $2 WHERE name = $1",
                &[&c.name, &(c.applied() as i64)],
            )
            .await;
        if let Err(e) = beat {
            tracing::debug!(error = %e, "cluster: heartbeat failed");
            continue;
        }
        if let Err(e) = c.refresh_nodes(&client).await {
            tracing::debug!(error = %e, "cluster: reading the node table failed");
        }
    }
}
