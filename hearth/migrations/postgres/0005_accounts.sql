-- Accounts. The email is stored trimmed and lowercased, so it is the unique
-- key for sign-in. The password is an argon2id PHC string (its parameters
-- travel with it, so a change of parameters can be noticed at login).
-- `admin` is the flag set through the CLI; admins named in the config are
-- admins whatever this column says.
CREATE TABLE hearth_user (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    verified_at BIGINT,
    admin BIGINT NOT NULL DEFAULT 0,
    disabled_at BIGINT,
    created_at BIGINT NOT NULL
);

-- Group memberships, for the "member of group G" guard.
CREATE TABLE hearth_user_group (
    user_id BIGINT NOT NULL REFERENCES hearth_user (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);

-- Rate-limit counters: one fixed window per key (`login:ip:…`,
-- `login:account:…`, …). In the database so every node sees the same count.
CREATE TABLE hearth_rate_limit (
    key TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    hits BIGINT NOT NULL
);
CREATE INDEX hearth_rate_limit_window ON hearth_rate_limit (window_start);
