CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE join_tokens (
    hash TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_by TEXT NOT NULL DEFAULT ''
);

CREATE TABLE runners (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    phase INTEGER NOT NULL,
    capabilities TEXT NOT NULL,
    last_seen BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE environments (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    name TEXT NOT NULL,
    runner_id TEXT NOT NULL DEFAULT '',
    deleted INTEGER NOT NULL DEFAULT 0,
    revision BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX environments_owner_name ON environments(owner_id, name) WHERE deleted = 0;
CREATE INDEX environments_revision ON environments(revision);
CREATE INDEX environments_runner ON environments(runner_id, revision);

CREATE TABLE revision (
    id INTEGER PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);
