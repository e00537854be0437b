-- Notices may expire; the nightly cleanup removes them. NULL never expires.
ALTER TABLE home_notice ADD COLUMN expires_at BIGINT;
CREATE INDEX home_notice_expires_at ON home_notice (expires_at);
