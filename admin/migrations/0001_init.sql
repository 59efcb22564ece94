-- Berth admin schema, version 1: the node's metadata, mirrored from its change feed.

-- Position in the node's change feed: the last sequence applied, updated in the same
-- transaction as the changes it covers (exactly-once effect over at-least-once delivery).
CREATE TABLE sync_state (
    id            int PRIMARY KEY CHECK (id = 1),
    last_seq      bigint NOT NULL,
    last_change_at timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sync_state (id, last_seq) VALUES (1, 0);

CREATE TABLE repositories (
    name          text PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_push_at  timestamptz
);

CREATE TABLE blobs (
    digest        text PRIMARY KEY,
    size          bigint NOT NULL,
    tier          text NOT NULL DEFAULT 'local',
    created_at    timestamptz
);

-- Which repositories may read which blobs (uploads and mounts).
CREATE TABLE repository_blobs (
    repo          text NOT NULL,
    digest        text NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX repository_blobs_digest ON repository_blobs (digest);

CREATE TABLE manifests (
    repo          text NOT NULL,
    digest        text NOT NULL,
    media_type    text NOT NULL,
    size          bigint NOT NULL,
    artifact_type text,
    subject       text,
    pushed_at     timestamptz NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX manifests_subject ON manifests (repo, subject) WHERE subject IS NOT NULL;

-- manifest -> blob references (config and layers), in manifest order.
CREATE TABLE manifest_blobs (
    repo          text NOT NULL,
    manifest      text NOT NULL,
    position      int NOT NULL,
    blob          text NOT NULL,
    PRIMARY KEY (repo, manifest, position)
);
CREATE INDEX manifest_blobs_blob ON manifest_blobs (blob);

-- manifest -> manifest references (children of an index), in order.
CREATE TABLE manifest_manifests (
    repo          text NOT NULL,
    parent        text NOT NULL,
    position      int NOT NULL,
    child         text NOT NULL,
    PRIMARY KEY (repo, parent, position)
);

CREATE TABLE tags (
    repo          text NOT NULL,
    tag           text NOT NULL,
    digest        text NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (repo, tag)
);

CREATE VIEW referrers AS
    SELECT repo, subject, digest, media_type, artifact_type, size, pushed_at
    FROM manifests WHERE subject IS NOT NULL;

-- Per-repository sizes. raw: what pulling every manifest once would transfer (blobs counted
-- once per manifest that references them); dedup: each blob the repository may read, once.
CREATE VIEW repository_sizes AS
    SELECT r.name AS repo,
           COALESCE((SELECT sum(b.size) FROM manifest_blobs mb JOIN blobs b ON b.digest = mb.blob
                     WHERE mb.repo = r.name), 0)
         + COALESCE((SELECT sum(m.size) FROM manifests m WHERE m.repo = r.name), 0) AS raw_bytes,
           COALESCE((SELECT sum(b.size) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
                     WHERE rb.repo = r.name), 0)
         + COALESCE((SELECT sum(m.size) FROM manifests m WHERE m.repo = r.name), 0) AS dedup_bytes
    FROM repositories r;

-- GC jobs run through the admin API or the schedule, with their reports.
CREATE TABLE gc_jobs (
    id            text PRIMARY KEY,
    trigger       text NOT NULL,
    dry_run       boolean NOT NULL,
    state         text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    report        jsonb,
    error         text
);
