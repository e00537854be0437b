-- How far each module that keeps an SQLite file of its own has had its
-- outbox copied into `hearth_event`: outbox rows up to `seq` are here
-- already, so a copy that committed here but not yet cleared the outbox
-- (the two files commit apart) is not made twice.
CREATE TABLE hearth_event_relay (
    module TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
