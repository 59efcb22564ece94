//! CPU work too large for a serving core: a few threads below the cores' priority, fed by a
//! bounded queue, answering through a oneshot channel that monoio can await.
//!
//! A serving core runs every connection it accepted; a request that computes for 100 ms stalls
//! all of them (and on core 0 the internal API). Validation of large manifests (JSON parse and
//! digest of up to `max_manifest_bytes`) runs here instead.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// Jobs waiting beyond those running: more are refused (the caller answers 503).
const QUEUE: usize = 256;

/// Inputs smaller than this are handled on the core: a thread hop costs more than the work.
pub const INLINE_BYTES: usize = 64 * 1024;

fn queue() -> &'static SyncSender<Job> {
    static POOL: OnceLock<SyncSender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        let threads = (std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) / 2).max(1);
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("berth-cpu-{i}")).spawn(move || {
                // Below the serving cores: a flood of large pushes slows those pushes, not pulls.
                // SAFETY: setpriority on this thread (PRIO_PROCESS with the thread id).
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 5) };
                loop {
                    let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    };
                    job();
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a CPU offload thread");
            }
        }
        tx
    })
}

/// Run `f` off the serving core. `None` when the queue is full (or the pool is gone).
pub async fn run<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = reply.send(f());
    });
    queue().try_send(job).ok()?;
    answer.await.ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_off_the_calling_thread() {
        let here = std::thread::current().id();
        let there = futures_lite_block_on(super::run(move || std::thread::current().id())).unwrap();
        assert_ne!(here, there);
    }

    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }
}
