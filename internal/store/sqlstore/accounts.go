package sqlstore

import (
	"context"
	"database/sql"

	"github.com/covedev/cove/internal/store"
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
