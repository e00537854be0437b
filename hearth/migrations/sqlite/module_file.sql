-- What hearth keeps in the SQLite file of a module that has one, next to
-- the module's tables, so that they commit together (WAL commits each
-- attached file on its own). Created if missing before the module's
-- migrations run; the module's migration ledger sits beside it.

-- The module's progress through each partition of `hearth_event` (the
-- same columns as in the main file).
CREATE TABLE IF NOT EXISTS hearth_event_cursor (
    module TEXT NOT NULL,
    part INTEGER NOT NULL,
    tx INTEGER NOT NULL,
    position INTEGER NOT NULL,
    handled INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (module, part)
);

-- Its held events (retrying, parked, waiting).
CREATE TABLE IF NOT EXISTS hearth_event_held (
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
CREATE INDEX IF NOT EXISTS hearth_event_held_part ON hearth_event_held (module, part, key, tx, position);

-- Events it published, written with its own changes and copied into the
-- main file's `hearth_event` afterwards. AUTOINCREMENT: a sequence number
-- is never reused, so the relay's high-water mark stays meaningful.
CREATE TABLE IF NOT EXISTS hearth_event_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
