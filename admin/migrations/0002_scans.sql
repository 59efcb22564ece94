-- Berth admin schema, version 2: vulnerability scanning (queue, results, webhooks).

-- The scan queue. A job names a manifest digest and a repository to pull it from. One worker
-- claims a job with FOR UPDATE SKIP LOCKED and holds it by `locked_until` (a crashed worker's
-- job becomes claimable again when that passes). At most one open job per digest.
CREATE TABLE scan_jobs (
    id            bigserial PRIMARY KEY,
    digest        text NOT NULL,
    repo          text NOT NULL,
    reason        text NOT NULL,              -- push | manual | rescan | child
    force         boolean NOT NULL DEFAULT false,
    state         text NOT NULL DEFAULT 'queued',  -- queued | running | done | failed
    attempts      int NOT NULL DEFAULT 0,
    not_before    timestamptz NOT NULL DEFAULT now(),
    locked_until  timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE UNIQUE INDEX scan_jobs_open ON scan_jobs (digest) WHERE state IN ('queued', 'running');
CREATE INDEX scan_jobs_claim ON scan_jobs (not_before, id) WHERE state = 'queued';

-- One scan per manifest digest (content-addressed: the same image in two repositories is
-- scanned once). `sbom` is the image's CycloneDX SBOM: rescans after a vulnerability-DB
-- update scan it instead of pulling layers again.
CREATE TABLE scans (
    digest          text PRIMARY KEY,
    repo            text NOT NULL,            -- where it was pulled from
    media_type      text,
    status          text NOT NULL,            -- queued | running | completed | failed | unsupported
    db_version      text,
    scanner         text,
    scanned_at      timestamptz,
    duration_ms     bigint,
    critical        int NOT NULL DEFAULT 0,
    high            int NOT NULL DEFAULT 0,
    medium          int NOT NULL DEFAULT 0,
    low             int NOT NULL DEFAULT 0,
    unknown         int NOT NULL DEFAULT 0,
    error           text,
    sbom            jsonb,
    report_referrer text,                     -- digest of the report artifact in the registry
    sbom_referrer   text,                     -- digest of the SBOM artifact in the registry
    children        text[],                   -- platform manifests of an index, rolled up
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scans_status ON scans (status);

-- One row per finding.
CREATE TABLE findings (
    digest            text NOT NULL REFERENCES scans (digest) ON DELETE CASCADE,
    cve               text NOT NULL,
    severity          text NOT NULL,          -- critical | high | medium | low | unknown
    package           text NOT NULL,
    installed_version text NOT NULL,
    fixed_version     text,
    title             text,
    description       text,
    cvss_score        double precision,
    cvss_vector       text,
    layer_digest      text,
    pkg_type          text,                   -- os | library
    ecosystem         text
);
CREATE INDEX findings_digest ON findings (digest);
CREATE INDEX findings_cve ON findings (cve);

-- The scanner's vulnerability-DB version last seen (a change triggers a rescan of all).
CREATE TABLE scanner_state (
    id            int PRIMARY KEY CHECK (id = 1),
    db_version    text,
    scanner       text,
    checked_at    timestamptz
);
INSERT INTO scanner_state (id) VALUES (1);

-- Webhook deliveries: one row per event and URL, retried with backoff.
CREATE TABLE webhook_deliveries (
    id            bigserial PRIMARY KEY,
    url           text NOT NULL,
    event         text NOT NULL,
    payload       jsonb NOT NULL,
    state         text NOT NULL DEFAULT 'pending',   -- pending | delivered | failed
    attempts      int NOT NULL DEFAULT 0,
    not_before    timestamptz NOT NULL DEFAULT now(),
    response_status int,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (not_before, id) WHERE state = 'pending';
