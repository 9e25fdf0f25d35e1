package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

func isDeleted(env *covev1.Environment) bool {
	return env.GetStatus().GetPhase() == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED
}

// nextRevision bumps the store-wide revision inside tx.
func (s *Store) nextRevision(ctx context.Context, tx *sql.Tx) (int64, error) {
	if _, err := tx.ExecContext(ctx, `UPDATE revision SET value = value + 1 WHERE id = 1`); err != nil {
		return 0, fmt.Errorf("bump revision: %w", err)
	}
	var rev int64
	if err := tx.QueryRowContext(ctx, `SELECT value FROM revision WHERE id = 1`).Scan(&rev); err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return rev, nil
}

func (s *Store) CreateEnvironment(ctx context.Context, env *covev1.Environment) (*covev1.Environment, error) {
	env = cloneEnv(env)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rev, err := s.nextRevision(ctx, tx)
		if err != nil {
			return err
		}
		env.Revision = rev
		data, err := protojson.Marshal(env)
		if err != nil {
			return err
		}
		m := env.GetMetadata()
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO environments (id, organization_id, owner_id, name, runner_id, deleted, revision, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
			env.Id, m.GetOrganizationId(), m.GetOwnerId(), m.GetName(), m.GetRunnerId(), boolInt(isDeleted(env)), rev, string(data))
		return s.wrap(err)
	})
	if err != nil {
		return nil, err
	}
	s.Notify()
	return env, nil
}

func (s *Store) GetEnvironment(ctx context.Context, id string) (*covev1.Environment, error) {
	return s.getEnv(ctx, s.db, `id = ?`, id)
}

func (s *Store) GetEnvironmentByName(ctx context.Context, ownerID, name string) (*covev1.Environment, error) {
	return s.getEnv(ctx, s.db, `owner_id = ? AND name = ? AND deleted = 0`, ownerID, name)
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Store) getEnv(ctx context.Context, q querier, where string, args ...any) (*covev1.Environment, error) {
	var data string
	var rev int64
	err := q.QueryRowContext(ctx, s.q(`SELECT revision, data FROM environments WHERE `+where), args...).Scan(&rev, &data)
	if err != nil {
		return nil, s.wrap(err)
	}
	return decodeEnv(data, rev)
}

func decodeEnv(data string, rev int64) (*covev1.Environment, error) {
	env := &covev1.Environment{}
	if err := protojson.Unmarshal([]byte(data), env); err != nil {
		return nil, fmt.Errorf("decode environment: %w", err)
	}
	env.Revision = rev
	return env, nil
}

func (s *Store) ListEnvironments(ctx context.Context, f store.EnvironmentFilter) ([]*covev1.Environment, error) {
	var where []string
	var args []any
	if f.OwnerID != "" {
		where, args = append(where, `owner_id = ?`), append(args, f.OwnerID)
	}
	if f.RunnerID != "" {
		where, args = append(where, `runner_id = ?`), append(args, f.RunnerID)
	}
	if f.Unassigned {
		where = append(where, `runner_id = ''`)
	}
	if !f.IncludeDeleted {
		where = append(where, `deleted = 0`)
	}
	if f.SinceRevision > 0 {
		where, args = append(where, `revision > ?`), append(args, f.SinceRevision)
	}
	query := `SELECT revision, data FROM environments`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, ` AND `)
	}
	query += ` ORDER BY revision`
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, s.wrap(err)
	}
	defer rows.Close()
	var out []*covev1.Environment
	for rows.Next() {
		var data string
		var rev int64
		if err := rows.Scan(&rev, &data); err != nil {
			return nil, err
		}
		env, err := decodeEnv(data, rev)
		if err != nil {
			return nil, err
		}
		out = append(out, env)
	}
	return out, rows.Err()
}

func (s *Store) UpdateEnvironment(ctx context.Context, id string, fn func(*covev1.Environment) error) (*covev1.Environment, error) {
	var out *covev1.Environment
	err := s.tx(ctx, func(tx *sql.Tx) error {
		env, err := s.getEnv(ctx, tx, `id = ?`, id)
		if err != nil {
			return err
		}
		if err := fn(env); err != nil {
			return err
		}
		rev, err := s.nextRevision(ctx, tx)
		if err != nil {
			return err
		}
		env.Id = id
		env.Revision = rev
		data, err := protojson.Marshal(env)
		if err != nil {
			return err
		}
		m := env.GetMetadata()
		_, err = tx.ExecContext(ctx, s.q(`UPDATE environments SET name = ?, runner_id = ?, deleted = ?, revision = ?, data = ? WHERE id = ?`),
			m.GetName(), m.GetRunnerId(), boolInt(isDeleted(env)), rev, string(data), id)
		if err != nil {
			return s.wrap(err)
		}
		out = env
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.Notify()
	return out, nil
}

func (s *Store) Revision(ctx context.Context) (int64, error) {
	var rev int64
	err := s.db.QueryRowContext(ctx, `SELECT value FROM revision WHERE id = 1`).Scan(&rev)
	return rev, s.wrap(err)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func cloneEnv(e *covev1.Environment) *covev1.Environment {
	b, _ := protojson.Marshal(e)
	out := &covev1.Environment{}
	_ = protojson.Unmarshal(b, out)
	return out
}
