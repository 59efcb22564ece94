//! Audit events: denials, failed logins, refused tokens, and changes to users, robots, groups
//! and rules. Each goes to the `berth::audit` log target and into a bounded in-memory ring the
//! admin sidecar reads (`GET /internal/v1/audit`) into Postgres.
//!
//! A flood cannot erase the trail (security round 2, finding 5: 215k anonymous denials in 20 s
//! pushed a failed login out of the ring before the sidecar copied it):
//! - *Denials* (`denied`, and `token_refused` of anonymous tokens) are aggregated: one record
//!   per (event, actor, subject, address) and window (`WINDOW`), with a `count`, at most
//!   `WINDOW_KEYS` records a window (the rest fold into one `*` record). A flood makes a few
//!   hundred records a second, not one per request, and one log line per record.
//! - *Security events* (logins failed, account, rule and policy changes, refused refresh
//!   tokens) are never aggregated and never pushed out by denials: when the ring is full the
//!   oldest denial goes first; a security event goes only when the ring holds nothing else.
//! - Every loss is counted by class (`dropped_denials`, `dropped_security` in each page, the
//!   `berth_audit_events_dropped` gauge), and the sidecar records it as an
//!   `audit_events_dropped` row.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_internal_api::accounts::{AuditEvent, AuditPage};

const CAPACITY: usize = 10_000;
/// How long repeated denials are summed before they become one record.
const WINDOW: Duration = Duration::from_secs(1);
/// Distinct denial records per window; beyond, they fold into one.
const WINDOW_KEYS: usize = 256;

/// Aggregation key of a denial.
type Key = (String, String, String, Option<IpAddr>);

/// The ring of recent events.
pub struct Audit {
    epoch: String,
    state: Mutex<State>,
}

struct State {
    next_seq: u64,
    ring: VecDeque<(bool, AuditEvent)>,
    /// Denials of the current window, in first-seen order.
    window: HashMap<Key, (u64, u64)>,
    window_order: Vec<Key>,
    window_start: Instant,
    dropped_denials: u64,
    dropped_security: u64,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            epoch: uuid::Uuid::new_v4().simple().to_string(),
            state: Mutex::new(State {
                next_seq: 1,
                ring: VecDeque::new(),
                window: HashMap::new(),
                window_order: Vec::new(),
                window_start: Instant::now(),
                dropped_denials: 0,
                dropped_security: 0,
            }),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Whether `event` (by `actor`) is a denial: repeated by floods, aggregated.
fn is_denial(event: &str, actor: &str) -> bool {
    event == "denied" || event == "cert_no_account" || (event == "token_refused" && actor == "-")
}

impl State {
    fn push(&mut self, denial: bool, mut e: AuditEvent) {
        e.seq = self.next_seq;
        self.next_seq += 1;
        if self.ring.len() >= CAPACITY {
            // The oldest denial makes room; a security event only when there is none.
            match self.ring.iter().position(|(d, _)| *d) {
                Some(i) => {
                    if let Some((_, gone)) = self.ring.remove(i) {
                        self.dropped_denials += gone.count;
                    }
                }
                None => {
                    if denial {
                        // Nothing but security events: the new denial is the one lost.
                        self.dropped_denials += e.count;
                        return;
                    }
                    self.ring.pop_front();
                    self.dropped_security += 1;
                }
            }
        }
        self.ring.push_back((denial, e));
    }

    /// Turn the window's sums into records once it is over (or `force`).
    fn flush(&mut self, force: bool) {
        if self.window_order.is_empty() || (!force && self.window_start.elapsed() < WINDOW) {
            return;
        }
        let order = std::mem::take(&mut self.window_order);
        for key in order {
            let Some((count, at_ms)) = self.window.remove(&key) else { continue };
            let (event, actor, subject, peer) = key;
            tracing::info!(target: "berth::audit", event, actor, subject, peer = ?peer, count, "audit");
            self.push(
                true,
                AuditEvent { seq: 0, at_ms, event, actor, subject, peer: peer.map(|p| p.to_string()), count },
            );
        }
        self.window.clear();
    }
}

impl Audit {
    /// Record an event (and log it; denials are logged once per aggregated record).
    pub fn record(&self, event: &str, actor: &str, subject: &str, peer: Option<IpAddr>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.flush(false);
        if is_denial(event, actor) {
            if st.window_order.is_empty() {
                st.window_start = Instant::now();
            }
            let mut key: Key = (event.to_owned(), actor.to_owned(), subject.to_owned(), peer);
            if !st.window.contains_key(&key) && st.window.len() >= WINDOW_KEYS {
                key = (event.to_owned(), "*".into(), "*".into(), None);
            }
            if !st.window.contains_key(&key) {
                st.window_order.push(key.clone());
            }
            st.window.entry(key).or_insert((0, now_ms())).0 += 1;
            return;
        }
        tracing::info!(target: "berth::audit", event, actor, subject, peer = ?peer, "audit");
        st.push(
            false,
            AuditEvent {
                seq: 0,
                at_ms: now_ms(),
                event: event.to_owned(),
                actor: actor.to_owned(),
                subject: subject.to_owned(),
                peer: peer.map(|p| p.to_string()),
                count: 1,
            },
        );
    }

    /// Events with `seq >= from`, at most `limit`. The denials summed so far are closed into
    /// records first: a reader sees every denial made before it asked.
    pub fn page(&self, from: u64, limit: usize) -> AuditPage {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.flush(true);
        let first = st.ring.front().map_or(st.next_seq, |(_, e)| e.seq);
        let events = st.ring.iter().map(|(_, e)| e).filter(|e| e.seq >= from).take(limit).cloned().collect();
        AuditPage {
            epoch: self.epoch.clone(),
            first,
            events,
            dropped_denials: st.dropped_denials,
            dropped_security: st.dropped_security,
        }
    }

    /// Occurrences lost so far: (denials, security events).
    pub fn dropped(&self) -> (u64, u64) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (st.dropped_denials, st.dropped_security)
    }

    /// Close the current denial window now (tests, shutdown).
    pub fn flush(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).flush(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_bounds() {
        let a = Audit::default();
        for i in 0..(CAPACITY + 5) {
            a.record("user_set", "internal", &format!("u{i}"), None);
        }
        let p = a.page(0, 3);
        assert_eq!(p.first, 6);
        assert_eq!(p.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6, 7, 8]);
        assert_eq!(p.dropped_security, 5, "the loss is reported");
        assert!(a.page(u64::MAX, 10).events.is_empty());
    }

    /// Finding 5: a flood of denials cannot push a security event out, and every denial is
    /// counted.
    #[test]
    fn a_denial_flood_keeps_security_events_and_counts_everything() {
        let a = Audit::default();
        a.record("login_failed", "alice", "", Some("192.0.2.9".parse().unwrap()));
        let mut sent = 0u64;
        for round in 0..50 {
            for i in 0..5_000u32 {
                let peer = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
                a.record("denied", "-", &format!("repository:r{}:pull", i % 7), Some(peer));
                sent += 1;
            }
            let _ = round;
            a.flush();
        }
        let p = a.page(0, usize::MAX);
        assert!(p.events.iter().any(|e| e.event == "login_failed" && e.actor == "alice"), "the failed login was lost");
        let kept: u64 = p.events.iter().filter(|e| e.event == "denied").map(|e| e.count).sum();
        assert_eq!(kept + p.dropped_denials, sent, "every denial is either in the ring or counted as dropped");
        assert!(p.events.len() <= CAPACITY);
        assert_eq!(p.dropped_security, 0);
        // At most WINDOW_KEYS + 1 records a window.
        assert!(p.events.iter().filter(|e| e.event == "denied").count() <= 50 * (WINDOW_KEYS + 1));
    }
}
