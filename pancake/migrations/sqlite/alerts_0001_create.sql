-- The alerts module: each member's feed of what happened to them, projected
-- from other modules' events, with the names and blocks it needs.
CREATE TABLE alerts_alert (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    read_at BIGINT
);
CREATE INDEX alerts_alert_owner ON alerts_alert (owner, id);
CREATE TABLE alerts_name (
    member BIGINT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL
);
CREATE TABLE alerts_block (
    blocker BIGINT NOT NULL,
    blocked BIGINT NOT NULL,
    PRIMARY KEY (blocker, blocked)
);
-- Deleted accounts: an alert or a name about one that arrives after the
-- deletion (from another partition) is dropped.
CREATE TABLE alerts_gone (
    member BIGINT PRIMARY KEY NOT NULL
);
