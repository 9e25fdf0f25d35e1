-- Tokens remember the token that created them (revoking one revokes what
-- it created). Runners may hold a pending token while they rotate.
-- (Statements are split at semicolons: keep them out of comments.)
ALTER TABLE tokens ADD COLUMN parent_id TEXT NOT NULL DEFAULT '';
CREATE INDEX tokens_user ON tokens(user_id);
CREATE INDEX tokens_parent ON tokens(parent_id);

ALTER TABLE runners ADD COLUMN next_token_hash TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX runners_next_token ON runners(next_token_hash) WHERE next_token_hash <> '';
