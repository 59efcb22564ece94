//! The tail: a dedicated Postgres connection `LISTEN`s for commits; each notification (or a
//! poll every `poll_ms`, for a notification lost with a connection) runs a catch-up round.
//! Reconnects on its own after Postgres or the network comes back.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use crate::Cluster;

pub(crate) async fn run(c: Arc<Cluster>) {
    let poll = Duration::from_millis(c.cfg.poll_ms);
    let mut failures = 0u32;
    while !c.stopping() {
        if !c.registered() {
            if let Err(e) = c.setup().await {
                if failures == 0 {
                    tracing::warn!(error = ?e, "cluster: cannot register this node yet");
                }
                failures += 1;
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.clamp(1, 10)))).await;
                continue;
            }
            tracing::info!("cluster: registered with Postgres");
        }
        let listener = match tokio_postgres::connect(&c.cfg.postgres_url, tokio_postgres::NoTls).await {
            Ok((client, mut conn)) => {
                let wake = c.clone();
                let driver = tokio::spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(_)) => wake.wake.notify_one(),
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {}", crate::log::CHANNEL)).await {
                    Ok(()) => Some((client, driver)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster: LISTEN failed");
                        driver.abort();
                        None
                    }
                }
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = %e, "cluster: cannot reach Postgres; pulls of known content go on, writes answer 503");
                }
                None
            }
        };
        // Without a listener, poll (catch-ups through the pool may still work).
        loop {
            let _ = tokio::time::timeout(poll, c.wake.notified()).await;
            if c.stopping() {
                return;
            }
            match c.catch_up_now().await {
                Ok(_) => {
                    if failures > 0 {
                        tracing::info!("cluster: Postgres reachable again; caught up with the change log");
                    }
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, "cluster: cannot catch up with the change log");
                    }
                    break;
                }
            }
            match &listener {
                Some((_, driver)) if driver.is_finished() => break,
                None => break,
                _ => {}
            }
        }
        if let Some((_, driver)) = listener {
            driver.abort();
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.clamp(1, 10)))).await;
    }
}
