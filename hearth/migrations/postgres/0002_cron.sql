-- Cron schedules, declared in code and kept here so that every node agrees
-- on the next tick. A tick fires on the node whose UPDATE moves `next_at`
-- forward from the tick's time; every other node's UPDATE matches no row.
CREATE TABLE hearth_cron (
    name TEXT PRIMARY KEY NOT NULL,
    expr TEXT NOT NULL,
    job TEXT NOT NULL,
    missed TEXT NOT NULL,
    next_at BIGINT NOT NULL,
    last_tick BIGINT,
    last_fired_at BIGINT,
    last_job_id BIGINT,
    updated_at BIGINT NOT NULL
);
