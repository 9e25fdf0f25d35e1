package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

func (s *Store) CreateOrganization(ctx context.Context, o store.Organization) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?)`), o.ID, o.Name, ms(o.CreatedAt))
	return s.wrap(err)
}

func (s *Store) GetOrganizationByName(ctx context.Context, name string) (store.Organization, error) {
	var o store.Organization
	var created int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT id, name, created_at FROM organizations WHERE name = ?`), name).Scan(&o.ID, &o.Name, &created)
	o.CreatedAt = fromMS(created)
	return o, s.wrap(err)
}

func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO users (id, organization_id, name, role, created_at) VALUES (?, ?, ?, ?, ?)`),
		u.ID, u.OrganizationID, u.Name, u.Role, ms(u.CreatedAt))
	return s.wrap(err)
}

const userCols = `id, organization_id, name, role, created_at`

func scanUser(row *sql.Row) (store.User, error) {
	var u store.User
	var created int64
	err := row.Scan(&u.ID, &u.OrganizationID, &u.Name, &u.Role, &created)
	u.CreatedAt = fromMS(created)
	return u, err
}

func (s *Store) GetUser(ctx context.Context, id string) (store.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, s.q(`SELECT `+userCols+` FROM users WHERE id = ?`), id))
	return u, s.wrap(err)
}

func (s *Store) GetUserByName(ctx context.Context, name string) (store.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, s.q(`SELECT `+userCols+` FROM users WHERE name = ?`), name))
	return u, s.wrap(err)
}

func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO tokens (id, user_id, name, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`),
		t.ID, t.UserID, t.Name, t.Hash, ms(t.CreatedAt), ms(t.ExpiresAt))
	return s.wrap(err)
}

func (s *Store) GetTokenByHash(ctx context.Context, hash string) (store.Token, error) {
	var t store.Token
	var created, expires int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT id, user_id, name, hash, created_at, expires_at FROM tokens WHERE hash = ?`), hash).
		Scan(&t.ID, &t.UserID, &t.Name, &t.Hash, &created, &expires)
	t.CreatedAt, t.ExpiresAt = fromMS(created), fromMS(expires)
	return t, s.wrap(err)
}

func (s *Store) CreateJoinToken(ctx context.Context, t store.JoinToken) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO join_tokens (hash, created_by, expires_at) VALUES (?, ?, ?)`), t.Hash, t.CreatedBy, ms(t.ExpiresAt))
	return s.wrap(err)
}

func (s *Store) ConsumeJoinToken(ctx context.Context, hash, runnerID string, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var expires int64
		var usedBy string
		err := tx.QueryRowContext(ctx, s.q(`SELECT expires_at, used_by FROM join_tokens WHERE hash = ?`), hash).Scan(&expires, &usedBy)
		if err != nil {
			return s.wrap(err)
		}
		if usedBy != "" {
			return fmt.Errorf("join token already used: %w", store.ErrConflict)
		}
		if expires != 0 && now.UnixMilli() > expires {
			return fmt.Errorf("join token expired: %w", store.ErrNotFound)
		}
		res, err := tx.ExecContext(ctx, s.q(`UPDATE join_tokens SET used_by = ? WHERE hash = ? AND used_by = ''`), runnerID, hash)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("join token already used: %w", store.ErrConflict)
		}
		return nil
	})
}

func (s *Store) CreateRunner(ctx context.Context, r store.Runner) error {
	caps, err := marshalCaps(r.Capabilities)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO runners (id, name, token_hash, phase, capabilities, last_seen, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		r.ID, r.Name, r.TokenHash, int32(r.Phase), caps, ms(r.LastSeen), ms(r.CreatedAt))
	return s.wrap(err)
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
	r, err := scanRunner(s.db.QueryRowContext(ctx, s.q(`SELECT `+runnerCols+` FROM runners WHERE token_hash = ?`), hash))
	return r, s.wrap(err)
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
