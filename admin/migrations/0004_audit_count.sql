-- Aggregated denials: one row stands for `count` occurrences (same event, actor, subject,
-- address within the node's one-second window).
ALTER TABLE audit_log ADD COLUMN count bigint NOT NULL DEFAULT 1;
