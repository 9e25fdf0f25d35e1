package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

func (s *Store) CreateJoinToken(ctx context.Context, t store.JoinToken) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO join_tokens (hash, created_by, expires_at) VALUES (?, ?, ?)`), t.Hash, t.CreatedBy, ms(t.ExpiresAt))
	return s.wrap(err)
}

func (s *Store) JoinRunner(ctx context.Context, joinHash string, r store.Runner, now time.Time) error {
	caps, err := marshalCaps(r.Capabilities)
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		var expires int64
		var usedBy string
		err := tx.QueryRowContext(ctx, s.q(`SELECT expires_at, used_by FROM join_tokens WHERE hash = ?`), joinHash).Scan(&expires, &usedBy)
		if err != nil {
			return s.wrap(err)
		}
		if usedBy != "" {
			return fmt.Errorf("join token already used: %w", store.ErrConflict)
		}
		if expires != 0 && now.UnixMilli() > expires {
			return fmt.Errorf("join token expired: %w", store.ErrNotFound)
		}
		res, err := tx.ExecContext(ctx, s.q(`UPDATE join_tokens SET used_by = ? WHERE hash = ? AND used_by = ''`), r.ID, joinHash)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("join token already used: %w", store.ErrConflict)
		}
		// In the same transaction: if the runner cannot be created, the
		// token is not spent.
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO runners (id, name, token_hash, phase, capabilities, last_seen, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`),
			r.ID, r.Name, r.TokenHash, int32(r.Phase), caps, ms(r.LastSeen), ms(r.CreatedAt))
		if err != nil {
			return fmt.Errorf("create runner: %w", s.wrap(err))
		}
		return nil
	})
}

const runnerCols = `id, name, token_hash, phase, capabilities, last_seen, created_at`

type scanner interface{ Scan(...any) error }

func scanRunner(sc scanner) (store.Runner, error) {
	var r store.Runner
	var phase int32
	var caps string
	var seen, created int64
	if err := sc.Scan(&r.ID, &r.Name, &r.TokenHash, &phase, &caps, &seen, &created); err != nil {
		return r, err
	}
	r.Phase = covev1.RunnerPhase(phase)
	r.LastSeen, r.CreatedAt = fromMS(seen), fromMS(created)
	r.Capabilities = &covev1.RunnerCapabilities{}
	if err := protojson.Unmarshal([]byte(caps), r.Capabilities); err != nil {
		return r, fmt.Errorf("runner %s capabilities: %w", r.ID, err)
	}
	return r, nil
}

func (s *Store) GetRunner(ctx context.Context, id string) (store.Runner, error) {
	r, err := scanRunner(s.db.QueryRowContext(ctx, s.q(`SELECT `+runnerCols+` FROM runners WHERE id = ?`), id))
	return r, s.wrap(err)
}

func (s *Store) GetRunnerByTokenHash(ctx context.Context, hash string) (store.Runner, error) {
	if hash == "" {
		return store.Runner{}, store.ErrNotFound
	}
	r, err := scanRunner(s.db.QueryRowContext(ctx, s.q(`SELECT `+runnerCols+` FROM runners WHERE token_hash = ?`), hash))
	if !errors.Is(err, sql.ErrNoRows) {
		return r, s.wrap(err)
	}
	// The first use of a pending token makes it current; the old one stops
	// working.
	if _, err := s.db.ExecContext(ctx, s.q(`UPDATE runners SET token_hash = next_token_hash, next_token_hash = '' WHERE next_token_hash = ?`), hash); err != nil {
		return store.Runner{}, s.wrap(err)
	}
	// Whether this call promoted it or a concurrent first use did (the
	// heartbeat and the watch start together), it is current now or
	// unknown.
	r, err = scanRunner(s.db.QueryRowContext(ctx, s.q(`SELECT `+runnerCols+` FROM runners WHERE token_hash = ?`), hash))
	return r, s.wrap(err)
}

func (s *Store) SetRunnerNextToken(ctx context.Context, id, hash string) error {
	return s.updateRunnerRow(ctx, `UPDATE runners SET next_token_hash = ? WHERE id = ?`, hash, id)
}

func (s *Store) RevokeRunnerTokens(ctx context.Context, id string) error {
	// token_hash is unique and never a hex SHA-256 after this.
	return s.updateRunnerRow(ctx, `UPDATE runners SET token_hash = ?, next_token_hash = '' WHERE id = ?`, "revoked:"+id, id)
}

func (s *Store) DeleteRunner(ctx context.Context, id string) error {
	return s.updateRunnerRow(ctx, `DELETE FROM runners WHERE id = ?`, id)
}

// updateRunnerRow runs a statement on one runner: ErrNotFound if none.
func (s *Store) updateRunnerRow(ctx context.Context, query string, args ...any) error {
	res, err := s.db.ExecContext(ctx, s.q(query), args...)
	if err != nil {
		return s.wrap(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return store.ErrNotFound
	}
	return nil
}

func (s *Store) UpdateRunner(ctx context.Context, r store.Runner) error {
	caps, err := marshalCaps(r.Capabilities)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE runners SET phase = ?, capabilities = ?, last_seen = ? WHERE id = ?`),
		int32(r.Phase), caps, ms(r.LastSeen), r.ID)
	if err != nil {
		return s.wrap(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return store.ErrNotFound
	}
	return nil
}

func (s *Store) TouchRunner(ctx context.Context, id string, caps *covev1.RunnerCapabilities, now time.Time) (bool, error) {
	c, err := marshalCaps(caps)
	if err != nil {
		return false, err
	}
	active := int32(covev1.RunnerPhase_RUNNER_PHASE_ACTIVE)
	// Each statement decides and writes at once: either the runner was not
	// ACTIVE (the first), or it was and still is (the second). A
	// MarkRunnerInactive between the two makes the second miss, and the
	// first is tried again.
	for range 3 {
		n, err := s.exec(ctx, `UPDATE runners SET phase = ?, capabilities = ?, last_seen = ? WHERE id = ? AND phase <> ?`,
			active, c, ms(now), id, active)
		if err != nil || n == 1 {
			return n == 1, err
		}
		n, err = s.exec(ctx, `UPDATE runners SET capabilities = ?, last_seen = ? WHERE id = ? AND phase = ?`,
			c, ms(now), id, active)
		if err != nil || n == 1 {
			return false, err
		}
	}
	if _, err := s.GetRunner(ctx, id); err != nil {
		return false, err
	}
	return false, fmt.Errorf("runner %s: heartbeat raced with its phase changing three times", id)
}

func (s *Store) MarkRunnerInactive(ctx context.Context, id string, seenBefore time.Time) (bool, error) {
	n, err := s.exec(ctx, `UPDATE runners SET phase = ? WHERE id = ? AND phase = ? AND last_seen < ?`,
		int32(covev1.RunnerPhase_RUNNER_PHASE_INACTIVE), id, int32(covev1.RunnerPhase_RUNNER_PHASE_ACTIVE), ms(seenBefore))
	return n == 1, err
}

// exec runs one statement and returns how many rows it changed.
func (s *Store) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.q(query), args...)
	if err != nil {
		return 0, s.wrap(err)
	}
	return res.RowsAffected()
}

func (s *Store) ListRunners(ctx context.Context) ([]store.Runner, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+runnerCols+` FROM runners ORDER BY created_at, id`)
	if err != nil {
		return nil, s.wrap(err)
	}
	defer rows.Close()
	var out []store.Runner
	for rows.Next() {
		r, err := scanRunner(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func marshalCaps(c *covev1.RunnerCapabilities) (string, error) {
	if c == nil {
		c = &covev1.RunnerCapabilities{}
	}
	b, err := protojson.Marshal(c)
	return string(b), err
}
