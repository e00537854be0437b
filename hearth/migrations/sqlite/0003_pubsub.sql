-- Published messages. PostgreSQL NOTIFY carries only the id (payloads would
-- hit its 8000-byte limit); subscribers read the body here, and reconnecting
-- browsers resume from here with Last-Event-ID. Housekeeping trims old rows.
CREATE TABLE hearth_pubsub (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX hearth_pubsub_channel ON hearth_pubsub (channel, id);
CREATE INDEX hearth_pubsub_created ON hearth_pubsub (created_at);
