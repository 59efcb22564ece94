-- Audit trail: the node's events (denials, failed logins, refused tokens, account changes),
-- read from its internal API, and changes made through the admin API.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL,
    source      text NOT NULL,          -- 'node' or 'admin-api'
    event       text NOT NULL,
    actor       text NOT NULL,
    subject     text NOT NULL,
    peer        text,
    node_epoch  text,                   -- node events: the node run they came from
    node_seq    bigint,                 -- … and their sequence number in it
    UNIQUE (node_epoch, node_seq)
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_event ON audit_log (event, at);
