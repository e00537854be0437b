-- Notices shown on the home page, newest first.
CREATE TABLE home_notice (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    -- Unix seconds, portable across engines.
    created_at BIGINT NOT NULL
);

CREATE INDEX home_notice_created_at ON home_notice (created_at);

-- A first notice, so a fresh install shows a page that reads from the database.
INSERT INTO home_notice (title, body, created_at)
VALUES ('Welcome to pancake', 'This page is rendered from the database by hearth.', CAST(strftime('%s', 'now') AS INTEGER));
