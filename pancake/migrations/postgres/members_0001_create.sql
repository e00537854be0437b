-- The members module: profiles, and who blocked whom.
CREATE TABLE members_profile (
    member BIGINT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    bio TEXT NOT NULL,
    city TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE members_block (
    blocker BIGINT NOT NULL,
    blocked BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (blocker, blocked)
);
CREATE INDEX members_block_blocked ON members_block (blocked);
-- Deleted accounts: a block event about one that is handled after the
-- deletion (it can sit in another partition) is dropped.
CREATE TABLE members_gone (
    member BIGINT PRIMARY KEY NOT NULL
);
