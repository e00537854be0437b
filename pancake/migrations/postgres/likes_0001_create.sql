-- The likes module: who likes whom, and what it keeps of other modules'
-- events (names to show, pairs that blocked each other).
CREATE TABLE likes_like (
    liker BIGINT NOT NULL,
    liked BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (liker, liked)
);
CREATE INDEX likes_like_liked ON likes_like (liked);
CREATE TABLE likes_name (
    member BIGINT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL
);
CREATE TABLE likes_block (
    blocker BIGINT NOT NULL,
    blocked BIGINT NOT NULL,
    PRIMARY KEY (blocker, blocked)
);
-- Deleted accounts. Events about one account may be handled after the
-- deletion (they can sit in another partition), so a like or a name that
-- arrives later is dropped rather than brought back.
CREATE TABLE likes_gone (
    member BIGINT PRIMARY KEY NOT NULL
);
