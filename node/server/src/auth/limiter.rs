//! Failed-login limits, per client address and per user name *at* that address: a token
//! bucket each. A failed check takes a token; with the bucket empty further attempts are
//! answered 429 with `Retry-After` before any password is checked. Successful logins take
//! nothing, and credentials already verified (cached) are never limited.
//!
//! The user bucket is keyed by (user, address): someone guessing at a name from one address
//! locks that name out *for that address only*; its owner, logging in from elsewhere, is not
//! refused because of the attacker's failures (round 1 keyed it by name alone, so eleven wrong
//! guesses locked a user or robot out everywhere). Guesses from many addresses are bounded
//! by each address's own bucket and by the bcrypt pool's queue (`Busy`); robots' secrets are
//! high-entropy and checked before any limit (see `Auth::login`).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `[auth.failed_logins]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailedLoginLimits {
    /// Failed logins one client address may make in a burst.
    pub per_address_burst: u32,
    /// … refilled at this many per minute. 0 turns the address limit off.
    pub per_address_per_minute: u32,
    /// Failed logins for one user name in a burst.
    pub per_user_burst: u32,
    /// … refilled at this many per minute. 0 turns the user limit off.
    pub per_user_per_minute: u32,
}

impl Default for FailedLoginLimits {
    fn default() -> Self {
        FailedLoginLimits {
            per_address_burst: 20,
            per_address_per_minute: 30,
            per_user_burst: 10,
            per_user_per_minute: 10,
        }
    }
}

/// Most tracked keys per table; beyond, full buckets (nothing to remember) are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Buckets<K> {
    burst: f64,
    per_sec: f64,
    map: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(burst: u32, per_minute: u32) -> Self {
        Buckets {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_minute) / 60.0,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_sec).min(self.burst);
        b.at = now;
    }

    /// How long until `key` may try again, if it may not now.
    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        if self.per_sec == 0.0 {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.get_mut(key)?;
        self.refill(b, now);
        (b.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
    }

    fn take(&self, key: &K, now: Instant) {
        if self.per_sec == 0.0 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let (burst, per_sec) = (self.burst, self.per_sec);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        let b = map.entry(key.clone()).or_insert(Bucket { tokens: self.burst, at: now });
        self.refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

/// Failed-login buckets per address and per user.
pub struct Limiter {
    addresses: Buckets<IpAddr>,
    users: Buckets<(String, Option<IpAddr>)>,
}

impl Limiter {
    /// From configuration.
    pub fn new(cfg: &FailedLoginLimits) -> Limiter {
        Limiter {
            addresses: Buckets::new(cfg.per_address_burst, cfg.per_address_per_minute),
            users: Buckets::new(cfg.per_user_burst, cfg.per_user_per_minute),
        }
    }

    /// How long `addr` (and `user`, when named) must wait before trying a password again.
    pub fn wait(&self, addr: Option<IpAddr>, user: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        let a = addr.and_then(|a| self.addresses.wait(&a, now));
        let u = user.and_then(|u| self.users.wait(&(u.to_owned(), addr), now));
        a.max(u)
    }

    /// Record a failed login.
    pub fn failed(&self, addr: Option<IpAddr>, user: Option<&str>) {
        let now = Instant::now();
        if let Some(a) = addr {
            self.addresses.take(&a, now);
        }
        if let Some(u) = user {
            self.users.take(&(u.to_owned(), addr), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empties_then_refills() {
        let l = Limiter::new(&FailedLoginLimits {
            per_address_burst: 3,
            per_address_per_minute: 60,
            per_user_burst: 100,
            per_user_per_minute: 60,
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.wait(Some(ip), Some("u")).is_none());
            l.failed(Some(ip), Some("u"));
        }
        let w = l.wait(Some(ip), Some("u")).expect("limited");
        assert!(w <= Duration::from_secs(1), "{w:?}");
        // Another address is not limited, not even for the same user.
        assert!(l.wait(Some("192.0.2.2".parse().unwrap()), Some("u")).is_none());
        std::thread::sleep(w + Duration::from_millis(20));
        assert!(l.wait(Some(ip), Some("u")).is_none());
    }

    /// Security round 2, finding 4: failures for a user from one address do not lock the user
    /// out at another.
    #[test]
    fn a_user_locked_at_one_address_logs_in_from_another() {
        let l = Limiter::new(&FailedLoginLimits {
            per_address_burst: 1000,
            per_address_per_minute: 60,
            per_user_burst: 3,
            per_user_per_minute: 1,
        });
        let attacker: IpAddr = "192.0.2.66".parse().unwrap();
        for _ in 0..3 {
            l.failed(Some(attacker), Some("robot$ci"));
        }
        assert!(l.wait(Some(attacker), Some("robot$ci")).is_some());
        assert!(l.wait(Some("192.0.2.7".parse().unwrap()), Some("robot$ci")).is_none());
    }

    #[test]
    fn zero_rate_is_off() {
        let l = Limiter::new(&FailedLoginLimits {
            per_address_burst: 1,
            per_address_per_minute: 0,
            per_user_burst: 1,
            per_user_per_minute: 0,
        });
        for _ in 0..10 {
            l.failed(Some("192.0.2.1".parse().unwrap()), Some("u"));
        }
        assert!(l.wait(Some("192.0.2.1".parse().unwrap()), Some("u")).is_none());
    }
}
