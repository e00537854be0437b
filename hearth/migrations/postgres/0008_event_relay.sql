-- Kept for the same schema on both engines: only SQLite modules with a
-- file of their own relay events through it (see the SQLite migration).
CREATE TABLE hearth_event_relay (
    module TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
