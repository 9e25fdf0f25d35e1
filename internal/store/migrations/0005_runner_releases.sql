-- Releases (review REV-1): an environment that left a runner (moved or
-- rescheduled to another, or deleted without it) is released there: the
-- runner is sent a DELETED copy of it until it reports its copy deleted.
-- (Statements are split at semicolons: keep them out of comments.)
CREATE TABLE runner_releases (
    environment_id TEXT NOT NULL,
    runner_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (environment_id, runner_id)
);

CREATE INDEX runner_releases_runner ON runner_releases (runner_id, created_at);
