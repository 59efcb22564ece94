//! Webhooks: a JSON event POSTed to each configured URL when a scan finds vulnerabilities that
//! were not there before (`vulnerabilities.found`) and when a scan fails (`scan.failed`).
//! Deliveries are rows in Postgres (survive restarts), retried with exponential backoff, and
//! listed by the admin API. With a secret, `X-Berth-Signature-256: sha256=<hex>` carries the
//! HMAC-SHA256 of the exact body (as GitHub's webhooks do), so receivers can verify it.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use tokio_postgres::Client;

use crate::config::WebhookSettings;
use crate::Sidecar;

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Queue `event` for every webhook subscribed to it.
pub async fn enqueue(
    c: &Client,
    hooks: &[WebhookSettings],
    event: &str,
    payload: &Value,
) -> Result<(), tokio_postgres::Error> {
    for h in hooks.iter().filter(|h| h.events.is_empty() || h.events.iter().any(|e| e == event)) {
        c.execute(
            "INSERT INTO webhook_deliveries (url, event, payload) VALUES ($1, $2, $3)",
            &[&h.url, &event, payload],
        )
        .await?;
    }
    Ok(())
}

/// Deliver queued events until the process ends.
pub async fn deliver(sc: Arc<Sidecar>) {
    let Some(settings) = sc.cfg.scan.clone() else { return };
    let mut client: Option<Client> = None;
    loop {
        if client.is_none() {
            client = crate::db::connect(&sc.cfg.postgres).await.ok();
        }
        let Some(c) = client.as_ref() else {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        };
        let row = c
            .query_opt(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, not_before = now() + interval '5 minutes'
                 WHERE id = (SELECT id FROM webhook_deliveries WHERE state = 'pending' AND not_before <= now()
                             ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
                 RETURNING id, url, event, payload, attempts",
                &[],
            )
            .await;
        let row = match row {
            Ok(Some(r)) => r,
            Ok(None) => {
                tokio::select! {
                    _ = sc.webhook_wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook queue: postgres failed");
                client = None;
                continue;
            }
        };
        let (id, url, event, payload, attempts): (i64, String, String, Value, i32) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let hook = settings.webhooks.iter().find(|h| h.url == url);
        let secret = hook.and_then(|h| h.secret.clone());
        let max = hook.map_or(8, |h| h.max_attempts);
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let (u, ev, b) = (url.clone(), event.clone(), body.clone());
        let sent = tokio::task::spawn_blocking(move || {
            // The configured URL only: a redirect (to an internal address, say) is a failed
            // delivery, never followed with the signed body.
            let mut req = ureq::AgentBuilder::new()
                .redirects(0)
                .build()
                .post(&u)
                .timeout(Duration::from_secs(10))
                .set("Content-Type", "application/json")
                .set("User-Agent", "berth-admin")
                .set("X-Berth-Event", &ev)
                .set("X-Berth-Delivery", &id.to_string());
            if let Some(s) = &secret {
                req = req.set("X-Berth-Signature-256", &signature(s, &b));
            }
            match req.send_bytes(&b) {
                Ok(r) if (300..400).contains(&r.status()) => {
                    Err((Some(r.status()), format!("answered {} (redirects are not followed)", r.status())))
                }
                Ok(r) => Ok(r.status()),
                Err(ureq::Error::Status(code, _)) => Err((Some(code), format!("answered {code}"))),
                Err(e) => Err((None, e.to_string())),
            }
        })
        .await
        .unwrap_or_else(|e| Err((None, e.to_string())));
        let res = match sent {
            Ok(code) => {
                tracing::info!(id, %url, %event, status = code, "webhook delivered");
                c.execute(
                    "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(), response_status = $2, last_error = NULL WHERE id = $1",
                    &[&id, &(code as i32)],
                )
                .await
            }
            Err((code, err)) => {
                let done = attempts >= max;
                let backoff = (1u64 << attempts.clamp(0, 8)) as f64;
                tracing::warn!(id, %url, %event, attempts, error = %err, gave_up = done, "webhook delivery failed");
                c.execute(
                    "UPDATE webhook_deliveries SET state = CASE WHEN $5 THEN 'failed' ELSE 'pending' END,
                            response_status = $2, last_error = $3, not_before = now() + make_interval(secs => $4)
                     WHERE id = $1",
                    &[&id, &code.map(|c| c as i32), &err, &backoff, &done],
                )
                .await
            }
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "webhook queue: postgres failed");
            client = None;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        let s = super::signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(s, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
