package sqlstore

import (
	"context"
	"database/sql"
	"time"

	"github.com/covedev/cove/internal/store"
)

func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO tokens (id, user_id, name, hash, parent_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		t.ID, t.UserID, t.Name, t.Hash, t.ParentID, ms(t.CreatedAt), ms(t.ExpiresAt))
	return s.wrap(err)
}

const tokenCols = `id, user_id, name, hash, parent_id, created_at, expires_at`

func scanToken(sc scanner) (store.Token, error) {
	var t store.Token
	var created, expires int64
	err := sc.Scan(&t.ID, &t.UserID, &t.Name, &t.Hash, &t.ParentID, &created, &expires)
	t.CreatedAt, t.ExpiresAt = fromMS(created), fromMS(expires)
	return t, err
}

func (s *Store) GetToken(ctx context.Context, id string) (store.Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, s.q(`SELECT `+tokenCols+` FROM tokens WHERE id = ?`), id))
	return t, s.wrap(err)
}

func (s *Store) GetTokenByHash(ctx context.Context, hash string) (store.Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, s.q(`SELECT `+tokenCols+` FROM tokens WHERE hash = ?`), hash))
	return t, s.wrap(err)
}

func (s *Store) ListTokens(ctx context.Context, userID string) ([]store.Token, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+tokenCols+` FROM tokens WHERE user_id = ? ORDER BY created_at, id`), userID)
	if err != nil {
		return nil, s.wrap(err)
	}
	defer rows.Close()
	var out []store.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func (s *Store) DeleteToken(ctx context.Context, userID, id string) ([]string, error) {
	var ids []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var found string
		if err := tx.QueryRowContext(ctx, s.q(`SELECT id FROM tokens WHERE id = ? AND user_id = ?`), id, userID).Scan(&found); err != nil {
			return s.wrap(err)
		}
		// The token, then what it created, breadth first.
		ids = []string{found}
		seen := map[string]bool{found: true}
		for i := 0; i < len(ids); i++ {
			children, err := s.childTokens(ctx, tx, ids[i])
			if err != nil {
				return err
			}
			for _, c := range children {
				if !seen[c] {
					seen[c] = true
					ids = append(ids, c)
				}
			}
		}
		for _, t := range ids {
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM tokens WHERE id = ?`), t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

func (s *Store) childTokens(ctx context.Context, tx *sql.Tx, parent string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, s.q(`SELECT id FROM tokens WHERE parent_id = ?`), parent)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

func (s *Store) DeleteExpiredTokens(ctx context.Context, now time.Time) error {
	_, err := s.db.ExecContext(ctx, s.q(`DELETE FROM tokens WHERE expires_at <> 0 AND expires_at < ?`), now.UnixMilli())
	return s.wrap(err)
}
