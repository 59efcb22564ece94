//! Prometheus exposition formats. Metrics are rendered as OpenMetrics text (what the
//! `prometheus-client` crate writes); a scraper that asks for OpenMetrics gets it with its own
//! content type, anything else gets the classic text format (`text/plain; version=0.0.4`),
//! which is the same text without the `# EOF` terminator.

/// OpenMetrics 1.0 content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Prometheus text format 0.0.4 content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Choose the format for an `Accept` header: returns the content type and the body to send.
pub fn negotiate(accept: Option<&str>, openmetrics_body: String) -> (&'static str, String) {
    let wants_openmetrics = accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut it = part.split(';');
            let ty = it.next().unwrap_or("").trim();
            let q_zero = it.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().map(|q| q == 0.0).unwrap_or(false))
            });
            ty.eq_ignore_ascii_case("application/openmetrics-text") && !q_zero
        })
    });
    if wants_openmetrics {
        (OPENMETRICS, openmetrics_body)
    } else {
        let body = openmetrics_body.strip_suffix("# EOF\n").map(str::to_owned).unwrap_or(openmetrics_body);
        (PROMETHEUS_TEXT, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let body = "# TYPE x counter\nx_total 1\n# EOF\n".to_string();
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (ct, b) = negotiate(Some(prom), body.clone());
        assert_eq!(ct, OPENMETRICS);
        assert!(b.ends_with("# EOF\n"));
        for accept in [None, Some("*/*"), Some("text/plain"), Some("application/openmetrics-text;q=0")] {
            let (ct, b) = negotiate(accept, body.clone());
            assert_eq!(ct, PROMETHEUS_TEXT, "{accept:?}");
            assert!(!b.contains("# EOF"), "{accept:?}");
        }
    }
}
