-- Domain events: the outbox every module publishes into and reads from.
-- AUTOINCREMENT, not a plain rowid: rowids are reused after deletes, which
-- would send a subscriber's cursor back over purged history. SQLite has one
-- writer at a time, so position order is commit order and `tx` stays 0.
CREATE TABLE hearth_event (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    tx INTEGER NOT NULL DEFAULT 0,
    part INTEGER NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    module TEXT NOT NULL,
    actor INTEGER,
    key TEXT,
    payload TEXT NOT NULL,
    published_at INTEGER NOT NULL
);
CREATE INDEX hearth_event_read ON hearth_event (part, tx, position);

-- Kept for the same schema on both engines; only PostgreSQL orders keys with it.
CREATE TABLE hearth_event_key (
    key TEXT PRIMARY KEY,
    tx INTEGER NOT NULL
);

-- Each subscribing module's progress through each partition: every event at
-- or before (tx, position) is handled, held or not for it.
CREATE TABLE hearth_event_cursor (
    module TEXT NOT NULL,
    part INTEGER NOT NULL,
    tx INTEGER NOT NULL,
    position INTEGER NOT NULL,
    handled INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (module, part)
);

-- Events taken out of a module's stream: one that failed (state `retry`
-- until it runs out of attempts, then `parked`) and the later events with
-- its key, which wait behind it (`waiting`).
CREATE TABLE hearth_event_held (
    module TEXT NOT NULL,
    position INTEGER NOT NULL,
    part INTEGER NOT NULL,
    tx INTEGER NOT NULL,
    key TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at INTEGER NOT NULL,
    error TEXT,
    held_at INTEGER NOT NULL,
    PRIMARY KEY (module, position)
);
CREATE INDEX hearth_event_held_part ON hearth_event_held (module, part, key, tx, position);
