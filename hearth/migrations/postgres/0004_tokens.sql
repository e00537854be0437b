-- The token store: sessions, email verification, password reset and CSRF
-- secrets are all tokens. Only the SHA-256 of a token is kept, so a copy of
-- the database holds no usable secret. A single-use token is deleted when it
-- is used; housekeeping deletes expired ones.
CREATE TABLE hearth_token (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    owner TEXT,
    data TEXT,
    single_use BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX hearth_token_owner ON hearth_token (kind, owner);
CREATE INDEX hearth_token_expires ON hearth_token (expires_at);
