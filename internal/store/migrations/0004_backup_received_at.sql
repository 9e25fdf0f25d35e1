-- The server's own time of receipt of each backup record: the order of an
-- environment's backups ("latest"), which a runner's clock must not decide
-- (review REV-4). Existing records keep their runner-reported order.
-- (Statements are split at semicolons: keep them out of comments.)
ALTER TABLE backups ADD COLUMN received_at BIGINT NOT NULL DEFAULT 0;
UPDATE backups SET received_at = taken_at;
CREATE INDEX backups_environment_received ON backups(environment_id, received_at);
CREATE INDEX backups_organization_received ON backups(organization_id, received_at);
