-- Domain events: the outbox every module publishes into and reads from.
-- Positions from an identity commit out of order, so readers order by
-- (tx, position) and read only below the oldest running transaction's id
-- (see hearth/src/events/store.rs): nothing that can still commit sorts
-- before what a reader has passed.
CREATE TABLE hearth_event (
    position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx BIGINT NOT NULL,
    part SMALLINT NOT NULL,
    id UUID NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    module TEXT NOT NULL,
    actor BIGINT,
    key TEXT,
    payload TEXT NOT NULL,
    published_at BIGINT NOT NULL
);
CREATE INDEX hearth_event_read ON hearth_event (part, tx, position);

-- The highest ordering id each key was published with. Publishing upserts
-- its row, which queues publishers of one key behind each other until
-- commit and lifts a later event above an earlier one of the same key
-- whose transaction id happened to be higher.
CREATE TABLE hearth_event_key (
    key TEXT PRIMARY KEY,
    tx BIGINT NOT NULL
);

-- Each subscribing module's progress through each partition: every event at
-- or before (tx, position) is handled, held or not for it.
CREATE TABLE hearth_event_cursor (
    module TEXT NOT NULL,
    part SMALLINT NOT NULL,
    tx BIGINT NOT NULL,
    position BIGINT NOT NULL,
    handled BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (module, part)
);

-- Events taken out of a module's stream: one that failed (state `retry`
-- until it runs out of attempts, then `parked`) and the later events with
-- its key, which wait behind it (`waiting`).
CREATE TABLE hearth_event_held (
    module TEXT NOT NULL,
    position BIGINT NOT NULL,
    part SMALLINT NOT NULL,
    tx BIGINT NOT NULL,
    key TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at BIGINT NOT NULL,
    error TEXT,
    held_at BIGINT NOT NULL,
    PRIMARY KEY (module, position)
);
CREATE INDEX hearth_event_held_part ON hearth_event_held (module, part, key, tx, position);
