-- A release says whether the environment ran on that runner since it came
-- there (review REV-S8-3): only then may its copy hold the user's changes,
-- and only then is the runner let take a salvage backup of it. Releases
-- recorded before this column existed are taken as having run (their
-- changes are not given up).
ALTER TABLE runner_releases ADD COLUMN ran INTEGER NOT NULL DEFAULT 1;
