-- Backups (issue 13): one record per committed backup (its manifest is in
-- the blob storage), and each organization's backup key, which never
-- leaves the server but to runners over their authenticated session.
-- (Statements are split at semicolons: keep them out of comments.)
CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    environment_id TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    runner_id TEXT NOT NULL,
    trigger_name TEXT NOT NULL,
    previous TEXT NOT NULL,
    taken_at BIGINT NOT NULL,
    files BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    bytes_new BIGINT NOT NULL,
    bytes_reused BIGINT NOT NULL,
    stored_bytes BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    frozen_ms BIGINT NOT NULL,
    skipped TEXT NOT NULL
);
CREATE INDEX backups_environment ON backups(environment_id, taken_at);
CREATE INDEX backups_organization ON backups(organization_id, taken_at);

CREATE TABLE organization_backup_keys (
    organization_id TEXT PRIMARY KEY,
    key_hex TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A move of an environment to another runner that waits for its current
-- runner to stop it and back it up (cove env start --runner).
CREATE TABLE environment_moves (
    environment_id TEXT PRIMARY KEY,
    from_runner_id TEXT NOT NULL,
    to_runner_id TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    requested_by TEXT NOT NULL,
    spec_version BIGINT NOT NULL,
    backup_generation BIGINT NOT NULL
);
