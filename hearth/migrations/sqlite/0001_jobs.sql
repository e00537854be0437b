-- The job queue: a job lives in exactly one of pending, active or dead.
-- Times are unix milliseconds; payloads are JSON text.
CREATE TABLE hearth_job_pending (
    -- AUTOINCREMENT: ids are never reused, because a job keeps its id as it
    -- moves between tables.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    unique_key TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX hearth_job_pending_claim ON hearth_job_pending (queue, priority DESC, run_at, id);
CREATE INDEX hearth_job_pending_next ON hearth_job_pending (queue, run_at);

CREATE TABLE hearth_job_active (
    id BIGINT PRIMARY KEY NOT NULL,
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    unique_key TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    worker TEXT NOT NULL
);
CREATE INDEX hearth_job_active_lease ON hearth_job_active (lease_until);
CREATE INDEX hearth_job_active_worker ON hearth_job_active (worker);

CREATE TABLE hearth_job_dead (
    id BIGINT PRIMARY KEY NOT NULL,
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    unique_key TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    died_at BIGINT NOT NULL
);
CREATE INDEX hearth_job_dead_died ON hearth_job_dead (died_at);

-- Recently finished jobs, kept for `jobs.history` and then purged.
CREATE TABLE hearth_job_done (
    id BIGINT PRIMARY KEY NOT NULL,
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    worker TEXT NOT NULL
);
CREATE INDEX hearth_job_done_finished ON hearth_job_done (finished_at);

-- A unique key is held while its job is pending or active.
CREATE TABLE hearth_job_unique (
    unique_key TEXT PRIMARY KEY NOT NULL,
    job_id BIGINT NOT NULL
);
