//! Connection admission: a cap on open connections over all cores and one per client address,
//! so idle or slow connections cannot exhaust descriptors and stop all service.
//!
//! Past the total cap a few more connections (`HEALTH_RESERVE`) are still accepted, but serve
//! only `/healthz` and `/readyz` (everything else gets 503 and a close): orchestrators keep
//! seeing the node's health while it sheds load. A client address over its own cap gets the
//! same treatment with 429. Beyond the reserve, connections are closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Connections accepted beyond the cap for health checks only.
pub const HEALTH_RESERVE: usize = 32;

/// Counts of open connections.
pub struct Admission {
    max: usize,
    per_address: usize,
    total: AtomicUsize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// What a new connection may do.
pub enum Admit {
    /// Everything.
    Full(Ticket),
    /// Only health checks; other requests get this status (503: node full, 429: address full).
    HealthOnly(Ticket, u16),
    /// Nothing: close it.
    Refuse,
}

/// An admitted connection; counts down when dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    addr: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.release(self.addr);
    }
}

impl Admission {
    /// `max` 0: three quarters of the open-file limit. `per_address` 0: no address limit.
    pub fn new(max: usize, per_address: usize) -> Admission {
        let max = if max == 0 { fd_limit().saturating_mul(3) / 4 } else { max }.max(16);
        Admission { max, per_address, total: AtomicUsize::new(0), by_address: Mutex::new(HashMap::new()) }
    }

    /// The total cap in force.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Admit a connection from `addr`.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Admit {
        let total = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        if total > self.max + HEALTH_RESERVE {
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Admit::Refuse;
        }
        let from_addr = {
            let mut m = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(addr).or_default();
            *n += 1;
            *n
        };
        let ticket = Ticket { admission: self.clone(), addr };
        if total > self.max {
            Admit::HealthOnly(ticket, 503)
        } else if self.per_address > 0 && from_addr > self.per_address {
            Admit::HealthOnly(ticket, 429)
        } else {
            Admit::Full(ticket)
        }
    }

    fn release(&self, addr: IpAddr) {
        self.total.fetch_sub(1, Ordering::SeqCst);
        let mut m = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                m.remove(&addr);
            }
        }
    }
}

/// The open-file limit (soft), capped at 2^20.
pub(crate) fn fd_limit() -> usize {
    // SAFETY: getrlimit into a zeroed local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            return usize::try_from(r.rlim_cur).unwrap_or(usize::MAX).min(1 << 20);
        }
    }
    1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_total_and_per_address() {
        let a = Arc::new(Admission::new(16, 2));
        let ip1: IpAddr = "192.0.2.1".parse().unwrap();
        let ip2: IpAddr = "192.0.2.2".parse().unwrap();
        let t1 = a.admit(ip1);
        let t2 = a.admit(ip1);
        assert!(matches!((&t1, &t2), (Admit::Full(_), Admit::Full(_))));
        assert!(matches!(a.admit(ip1), Admit::HealthOnly(_, 429)));
        drop(t1);
        let again = a.admit(ip1);
        assert!(matches!(again, Admit::Full(_)), "a closed connection frees its slot");
        let mut held = Vec::new();
        for i in 0..14 {
            let ip: IpAddr = format!("198.51.100.{i}").parse().unwrap();
            held.push(a.admit(ip));
        }
        assert!(held.iter().all(|t| matches!(t, Admit::Full(_))));
        assert!(matches!(a.admit(ip2), Admit::HealthOnly(_, 503)));
        for _ in 0..HEALTH_RESERVE {
            held.push(a.admit(ip2));
        }
        assert!(matches!(a.admit(ip2), Admit::Refuse));
        drop(held);
        assert!(matches!(a.admit(ip2), Admit::Full(_)));
    }
}
