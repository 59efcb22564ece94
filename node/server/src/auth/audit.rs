//! Audit events: denials, failed logins, refused tokens, and changes to users, robots, groups
//! and rules. Each goes to the `berth::audit` log target and into a bounded in-memory ring the
//! admin sidecar reads (`GET /internal/v1/audit`) into Postgres. The ring holds the last
//! `CAPACITY` events; a sidecar away for longer sees the gap (`first` moved past what it read)
//! and the log still has them.

use std::collections::VecDeque;
use std::sync::Mutex;

use berth_internal_api::accounts::{AuditEvent, AuditPage};

const CAPACITY: usize = 10_000;

/// The ring of recent events.
pub struct Audit {
    epoch: String,
    ring: Mutex<(u64, VecDeque<AuditEvent>)>,
}

impl Default for Audit {
    fn default() -> Self {
        Audit { epoch: uuid::Uuid::new_v4().simple().to_string(), ring: Mutex::new((1, VecDeque::new())) }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Audit {
    /// Record an event (and log it).
    pub fn record(&self, event: &str, actor: &str, subject: &str, peer: Option<std::net::IpAddr>) {
        tracing::info!(target: "berth::audit", event, actor, subject, peer = ?peer, "audit");
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let seq = ring.0;
        ring.0 += 1;
        if ring.1.len() >= CAPACITY {
            ring.1.pop_front();
        }
        ring.1.push_back(AuditEvent {
            seq,
            at_ms: now_ms(),
            event: event.to_owned(),
            actor: actor.to_owned(),
            subject: subject.to_owned(),
            peer: peer.map(|p| p.to_string()),
        });
    }

    /// Events with `seq >= from`, at most `limit`.
    pub fn page(&self, from: u64, limit: usize) -> AuditPage {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let first = ring.1.front().map_or(ring.0, |e| e.seq);
        let events = ring.1.iter().filter(|e| e.seq >= from).take(limit).cloned().collect();
        AuditPage { epoch: self.epoch.clone(), first, events }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pages_and_bounds() {
        let a = super::Audit::default();
        for i in 0..(super::CAPACITY + 5) {
            a.record("denied", "u", &format!("s{i}"), None);
        }
        let p = a.page(0, 3);
        assert_eq!(p.first, 6);
        assert_eq!(p.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6, 7, 8]);
        assert!(a.page(u64::MAX, 10).events.is_empty());
    }
}
