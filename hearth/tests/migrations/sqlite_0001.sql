-- Items the probe module stores, to show a module's table on both engines.
CREATE TABLE probe_item (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    weight BIGINT NOT NULL DEFAULT 0,
    note TEXT,
    created_at BIGINT NOT NULL
);
