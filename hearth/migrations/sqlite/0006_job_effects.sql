-- Jobs whose effects committed, recorded by `JobRun::once` in the handler's
-- own transaction, so that an attempt run again after a crash (its
-- completion was lost) sees that the work is done. Job ids are never reused.
CREATE TABLE hearth_job_effect (
    job_id BIGINT PRIMARY KEY,
    done_at BIGINT NOT NULL
);
