//! Keeping a single-writer lease (GC, compaction) alive while its holder works.

use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Renews a lease (GC, compaction) every third of its lifetime until stopped; a renewal that
/// fails is logged (the role's writes are fenced: they fail once the lease is lost).
pub(crate) struct LeaseRenewal {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LeaseRenewal {
    pub(crate) fn start(c: Arc<berth_cluster::Cluster>, lease: berth_cluster::Lease) -> LeaseRenewal {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let every = std::time::Duration::from_millis(c.config().lease_ttl_secs * 1000 / 3);
        let thread = std::thread::Builder::new()
            .name(format!("berth-{}-lease", lease.role))
            .spawn(move || {
                let mut next = std::time::Instant::now() + every;
                while !s2.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    if std::time::Instant::now() >= next {
                        if !c.renew(&lease) {
                            tracing::error!(
                                role = %lease.role,
                                epoch = lease.epoch,
                                "cluster: lost a lease while working; its remaining writes will be refused"
                            );
                            return;
                        }
                        next = std::time::Instant::now() + every;
                    }
                }
            })
            .ok();
        LeaseRenewal { stop, thread }
    }

    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
