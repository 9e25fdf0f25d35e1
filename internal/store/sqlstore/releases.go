package sqlstore

import (
	"context"

	"github.com/covedev/cove/internal/store"
)

// PutRelease implements store.Store.
func (s *Store) PutRelease(ctx context.Context, r store.Release) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO runner_releases (environment_id, runner_id, created_at, ran) VALUES (?, ?, ?, ?) ON CONFLICT (environment_id, runner_id) DO NOTHING`),
		r.EnvironmentID, r.RunnerID, ms(r.CreatedAt), boolInt(r.Ran))
	if err != nil {
		return s.wrap(err)
	}
	s.Notify() // the runner's assignment watch sends it
	return nil
}

// ListReleases implements store.Store.
func (s *Store) ListReleases(ctx context.Context, runnerID string) ([]store.Release, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT environment_id, runner_id, created_at, ran FROM runner_releases WHERE runner_id = ? ORDER BY created_at, environment_id`), runnerID)
	if err != nil {
		return nil, s.wrap(err)
	}
	defer rows.Close()
	var out []store.Release
	for rows.Next() {
		var r store.Release
		var at, ran int64
		if err := rows.Scan(&r.EnvironmentID, &r.RunnerID, &at, &ran); err != nil {
			return nil, err
		}
		r.CreatedAt, r.Ran = fromMS(at), ran != 0
		out = append(out, r)
	}
	return out, rows.Err()
}

// GetRelease implements store.Store.
func (s *Store) GetRelease(ctx context.Context, environmentID, runnerID string) (store.Release, error) {
	r := store.Release{EnvironmentID: environmentID, RunnerID: runnerID}
	var at, ran int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT created_at, ran FROM runner_releases WHERE environment_id = ? AND runner_id = ?`), environmentID, runnerID).Scan(&at, &ran)
	if err != nil {
		return store.Release{}, s.wrap(err)
	}
	r.CreatedAt, r.Ran = fromMS(at), ran != 0
	return r, nil
}

// DeleteRelease implements store.Store.
func (s *Store) DeleteRelease(ctx context.Context, environmentID, runnerID string) error {
	_, err := s.db.ExecContext(ctx, s.q(`DELETE FROM runner_releases WHERE environment_id = ? AND runner_id = ?`), environmentID, runnerID)
	return s.wrap(err)
}
