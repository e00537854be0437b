-- Tables of the chores test module: orders (the business write) and what its jobs did.
CREATE TABLE chores_order (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item TEXT NOT NULL
);
CREATE TABLE chores_run (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    note TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
-- A second run of one job would violate this key.
CREATE TABLE chores_once (
    job_id BIGINT PRIMARY KEY NOT NULL,
    worker TEXT NOT NULL
);
