//! `berth doctor`: checks a node's setup and says what is wrong and how to fix it, one line per
//! check: the configuration, the data directory (exists, writable, free space), the running
//! node (health, readiness, its internal API), S3 (reachable, writable: a probe object is
//! written, read back and deleted), the clock (against S3's `Date`) and, in a cluster, the
//! node's view of it (Postgres, its position in the log, every node's heartbeat and whether
//! its internal URL answers from this node). The sidecar's
//! dependencies (Postgres, Trivy) are checked by `berth-admin doctor`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::Config;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Fine.
    Ok(String),
    /// Works, but deserves attention.
    Warn(String),
    /// Broken: the message says how to fix it.
    Fail(String),
}

/// One named check.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it went.
    pub outcome: Outcome,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (tag, msg) = match &self.outcome {
            Outcome::Ok(m) => ("ok  ", m),
            Outcome::Warn(m) => ("warn", m),
            Outcome::Fail(m) => ("FAIL", m),
        };
        write!(f, "{tag} {:<12} {msg}", self.name)
    }
}

fn check(name: &'static str, outcome: Outcome) -> Check {
    Check { name, outcome }
}

fn data_dir(dir: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    if !dir.exists() {
        out.push(check(
            "data dir",
            Outcome::Warn(format!("{} does not exist yet (berth serve creates it)", dir.display())),
        ));
        return out;
    }
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    match std::fs::write(&probe, b"probe") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            out.push(check("data dir", Outcome::Ok(format!("{} is writable", dir.display()))));
        }
        Err(e) => out.push(check(
            "data dir",
            Outcome::Fail(format!(
                "{} is not writable ({e}): chown it to the user running berth, or choose another --data-dir",
                dir.display()
            )),
        )),
    }
    if let Some((size, free)) = crate::api::disk_space(dir) {
        let pct = if size > 0 { free as f64 * 100.0 / size as f64 } else { 0.0 };
        let msg = format!("{:.1} GB free of {:.1} GB ({pct:.0}%)", free as f64 / 1e9, size as f64 / 1e9);
        out.push(check(
            "disk",
            if pct < 5.0 {
                Outcome::Fail(format!("{msg}: pushes will fail with 507; run `berth gc --delete` or grow the volume"))
            } else if pct < 15.0 {
                Outcome::Warn(format!("{msg}: running low"))
            } else {
                Outcome::Ok(msg)
            },
        ));
    }
    out
}

fn node(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let addr = match crate::server::resolve("listen", &cfg.listen) {
        Ok(mut a) => {
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            a
        }
        Err(_) => return out,
    };
    // The status, or why there was none.
    let get = |path: &str| -> Result<u16, String> {
        match ureq::get(&format!("http://{addr}{path}")).timeout(Duration::from_secs(3)).call() {
            Ok(r) => Ok(r.status()),
            Err(ureq::Error::Status(s, _)) => Ok(s),
            Err(e) => Err(e.to_string()),
        }
    };
    match get("/healthz") {
        Ok(_) => {
            let ready = get("/readyz") == Ok(200);
            out.push(check(
                "node",
                if ready {
                    Outcome::Ok(format!("answering on {addr}"))
                } else {
                    Outcome::Warn(format!("answering on {addr} but not ready (shutting down?)"))
                },
            ));
        }
        Err(e) => {
            out.push(check(
                "node",
                Outcome::Fail(format!("nothing answers on {addr} ({e}): start it with `berth serve`")),
            ));
            return out;
        }
    }
    match berth_internal_api::InternalClient::resolve(&cfg.data_dir, None, cfg.internal.token.clone()) {
        Ok(c) => match c.call("GET", "/internal/v1/stats", None, Duration::from_secs(5)) {
            Ok((200, _)) => out.push(check("internal api", Outcome::Ok(format!("{} answers", c.url())))),
            Ok((s, v)) => out.push(check(
                "internal api",
                Outcome::Fail(format!("{} answered {s} ({v}): is internal.token the node's token?", c.url())),
            )),
            Err(e) => out.push(check(
                "internal api",
                Outcome::Fail(format!("{e}: the sidecar and `berth gc` cannot reach the node")),
            )),
        },
        Err(e) => out.push(check("internal api", Outcome::Fail(e.to_string()))),
    }
    out
}

/// In a cluster: the running node's view (`GET /internal/v1/cluster`): Postgres reachable, this
/// node caught up and not stranded, every node heartbeating and its internal URL reachable
/// from this node (uploads are forwarded there).
fn cluster(cfg: &Config) -> Vec<Check> {
    if cfg.cluster.is_none() {
        return Vec::new();
    }
    let Ok(client) = berth_internal_api::InternalClient::resolve(&cfg.data_dir, None, cfg.internal.token.clone())
    else {
        return Vec::new(); // "internal api" already failed
    };
    let v = match client.call("GET", "/internal/v1/cluster?probe=true", None, Duration::from_secs(15)) {
        Ok((200, v)) => v,
        Ok((503, v)) => {
            let why = v["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
            return vec![check(
                "cluster",
                Outcome::Fail(format!(
                    "the node cannot use the cluster's Postgres ({why}); check cluster.postgres_url and the network"
                )),
            )];
        }
        Ok((s, v)) => {
            return vec![check("cluster", Outcome::Fail(format!("GET /internal/v1/cluster answered {s}: {v}")))]
        }
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
    let live = nodes.iter().filter(|n| n["live"] == true).count();
    let me = v["node"].as_str().unwrap_or("?");
    let (applied, head) = (v["applied_seq"].as_u64().unwrap_or(0), v["head_seq"].as_u64().unwrap_or(0));
    out.push(check(
        "cluster",
        if v["stranded"] == true {
            Outcome::Fail(
                "this node cannot catch up with the change log (it was away while the log was compacted past it): stop it, empty its data directory, start it again".into(),
            )
        } else if head.saturating_sub(applied) > 10_000 {
            Outcome::Warn(format!("node {me}: {} changes behind the log (applied {applied} of {head})", head - applied))
        } else {
            Outcome::Ok(format!("node {me}: {live} of {} nodes live, log applied {applied} of {head}", nodes.len()))
        },
    ));
    for n in &nodes {
        let name = n["name"].as_str().unwrap_or("?");
        let url = n["internal_url"].as_str().unwrap_or("?");
        if n["live"] != true {
            let age = n["heartbeat_age_secs"].as_f64().unwrap_or(0.0);
            out.push(check("cluster node", Outcome::Warn(format!("{name}: last heartbeat {age:.0} s ago (stopped?)"))));
        } else if n["reachable"] != true {
            let why = n["unreachable_because"].as_str().unwrap_or("no answer");
            out.push(check(
                "cluster node",
                Outcome::Fail(format!(
                    "{name}: its internal_url {url} does not answer from this node ({why}): uploads it owns fail when they land here; set cluster.internal_url on {name} to an address the others reach"
                )),
            ));
        } else {
            out.push(check("cluster node", Outcome::Ok(format!("{name}: live, {url} reachable"))));
        }
    }
    out
}

fn s3(cfg: &Config) -> Vec<Check> {
    let Some(s3) = cfg.storage.s3.clone() else {
        return vec![check("s3", Outcome::Ok("not configured (local disk only)".into()))];
    };
    let bucket = s3.bucket.clone();
    let endpoint = s3.endpoint.clone();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return vec![check("s3", Outcome::Fail(format!("cannot start a runtime: {e}")))],
    };
    let key = format!("{}doctor/probe-{}", s3.normalized_prefix(), uuid::Uuid::new_v4().simple());
    let res: Result<(), String> = rt.block_on(async move {
        let remote = berth_tiering::Remote::connect(std::sync::Arc::new(s3)).await;
        let put = async {
            remote.put_bytes(&key, b"berth doctor".to_vec(), "text/plain").await?;
            let (back, _) = remote.get_bytes(&key).await?;
            remote.delete(&key).await?;
            Ok::<_, berth_tiering::TierError>(back)
        };
        match tokio::time::timeout(Duration::from_secs(20), put).await {
            Err(_) => Err("no answer within 20 s".to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(b)) if b == b"berth doctor" => Ok(()),
            Ok(Ok(_)) => Err("the probe object read back differs from what was written".into()),
        }
    });
    let mut out = vec![match res {
        Ok(()) => check("s3", Outcome::Ok(format!("bucket {bucket:?} is reachable and writable"))),
        Err(e) => check(
            "s3",
            Outcome::Fail(format!(
                "bucket {bucket:?}{}: {e}; check storage.s3 (bucket, endpoint, credentials) and the network",
                endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default()
            )),
        ),
    }];
    // Clock skew against the S3 endpoint's Date header (S3 rejects requests off by > 15 min).
    if let Some(ep) = endpoint {
        let date = match ureq::head(&ep).timeout(Duration::from_secs(5)).call() {
            Ok(r) => r.header("date").map(str::to_owned),
            Err(ureq::Error::Status(_, r)) => r.header("date").map(str::to_owned),
            Err(_) => None,
        };
        {
            if let Some(date) = date.as_deref().and_then(httpdate) {
                let skew = match SystemTime::now().duration_since(date) {
                    Ok(d) => d.as_secs() as i64,
                    Err(e) => -(e.duration().as_secs() as i64),
                };
                out.push(check(
                    "clock",
                    if skew.abs() > 300 {
                        Outcome::Fail(format!(
                            "{skew} s off the S3 server's clock: fix NTP (S3 refuses skews over 15 min)"
                        ))
                    } else {
                        Outcome::Ok(format!("{skew} s off the S3 server's clock"))
                    },
                ));
            }
        }
    }
    out
}

/// `Sun, 29 Nov 2026 21:00:00 GMT`.
fn httpdate(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(&rfc1123_to_rfc3339(s)?).ok()
}

fn rfc1123_to_rfc3339(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 {
        return None;
    }
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| *m == parts[2])?
        + 1;
    Some(format!("{}-{month:02}-{:0>2}T{}Z", parts[3], parts[1], parts[4]))
}

/// Run every check against a configuration.
pub fn run(cfg: &Config) -> Vec<Check> {
    let mut out = vec![match cfg.check() {
        Ok(s) => check("config", Outcome::Ok(s.trim_start_matches("configuration OK: ").to_string())),
        Err(e) => check("config", Outcome::Fail(e)),
    }];
    out.extend(data_dir(&cfg.data_dir));
    out.extend(node(cfg));
    out.extend(cluster(cfg));
    out.extend(s3(cfg));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates() {
        assert_eq!(super::rfc1123_to_rfc3339("Sun, 29 Nov 2026 21:00:05 GMT").unwrap(), "2026-11-29T21:00:05Z");
        assert!(super::httpdate("Sun, 6 Nov 1994 08:49:37 GMT").is_some());
        assert!(super::httpdate("yesterday").is_none());
    }
}
