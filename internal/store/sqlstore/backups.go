package sqlstore

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/store"
)

const backupCols = `id, environment_id, organization_id, runner_id, trigger_name, previous, taken_at, files, bytes, bytes_new, bytes_reused, stored_bytes, duration_ms, frozen_ms, skipped, received_at`

func (s *Store) CreateBackup(ctx context.Context, b store.Backup) error {
	skipped, err := json.Marshal(b.Skipped)
	if err != nil {
		return fmt.Errorf("encode skipped paths: %w", err)
	}
	if b.Skipped == nil {
		skipped = []byte("[]")
	}
	received := b.ReceivedAt
	if received.IsZero() {
		received = b.Time
	}
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO backups (`+backupCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		b.ID, b.EnvironmentID, b.OrganizationID, b.RunnerID, b.Trigger, b.Previous, ms(b.Time),
		b.Files, b.Bytes, b.BytesNew, b.BytesReused, b.StoredBytes, b.DurationMS, b.FrozenMS, string(skipped), ms(received))
	return s.wrap(err)
}

func (s *Store) ListBackups(ctx context.Context, environmentID string) ([]store.Backup, error) {
	return s.listBackups(ctx, `environment_id = ?`, environmentID)
}

func (s *Store) ListOrganizationBackups(ctx context.Context, organizationID string) ([]store.Backup, error) {
	return s.listBackups(ctx, `organization_id = ?`, organizationID)
}

func (s *Store) listBackups(ctx context.Context, where string, arg string) ([]store.Backup, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+backupCols+` FROM backups WHERE `+where+` ORDER BY received_at DESC, taken_at DESC, id DESC`), arg)
	if err != nil {
		return nil, s.wrap(err)
	}
	defer rows.Close()
	var out []store.Backup
	for rows.Next() {
		var b store.Backup
		var taken, received int64
		var skipped string
		if err := rows.Scan(&b.ID, &b.EnvironmentID, &b.OrganizationID, &b.RunnerID, &b.Trigger, &b.Previous, &taken,
			&b.Files, &b.Bytes, &b.BytesNew, &b.BytesReused, &b.StoredBytes, &b.DurationMS, &b.FrozenMS, &skipped, &received); err != nil {
			return nil, err
		}
		b.Time, b.ReceivedAt = fromMS(taken), fromMS(received)
		if err := json.Unmarshal([]byte(skipped), &b.Skipped); err != nil {
			return nil, fmt.Errorf("backup %s: decode skipped paths: %w", b.ID, err)
		}
		if len(b.Skipped) == 0 {
			b.Skipped = nil
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

func (s *Store) DeleteBackup(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, s.q(`DELETE FROM backups WHERE id = ?`), id)
	return s.wrap(err)
}

func (s *Store) ListOrganizations(ctx context.Context) ([]store.Organization, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, created_at FROM organizations ORDER BY created_at, id`)
	if err != nil {
		return nil, s.wrap(err)
	}
	defer rows.Close()
	var out []store.Organization
	for rows.Next() {
		var o store.Organization
		var created int64
		if err := rows.Scan(&o.ID, &o.Name, &created); err != nil {
			return nil, err
		}
		o.CreatedAt = fromMS(created)
		out = append(out, o)
	}
	return out, rows.Err()
}

// OrganizationBackupKey implements store.Store. A new key is inserted only
// if none exists (ON CONFLICT DO NOTHING), then whatever is stored is read
// back, in one transaction: of two concurrent first uses, both get the key
// that won.
func (s *Store) OrganizationBackupKey(ctx context.Context, organizationID string) ([]byte, error) {
	if organizationID == "" {
		return nil, fmt.Errorf("backup key: no organization: %w", store.ErrNotFound)
	}
	var key []byte
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var stored string
		err := tx.QueryRowContext(ctx, s.q(`SELECT key_hex FROM organization_backup_keys WHERE organization_id = ?`), organizationID).Scan(&stored)
		if err == sql.ErrNoRows {
			var n int
			if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM organizations WHERE id = ?`), organizationID).Scan(&n); err != nil {
				return s.wrap(err)
			}
			if n == 0 {
				return fmt.Errorf("organization %s: %w", organizationID, store.ErrNotFound)
			}
			fresh, kerr := backuprepo.NewKey()
			if kerr != nil {
				return kerr
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO organization_backup_keys (organization_id, key_hex, created_at) VALUES (?, ?, ?) ON CONFLICT (organization_id) DO NOTHING`),
				organizationID, hex.EncodeToString(fresh), nowMS()); err != nil {
				return s.wrap(err)
			}
			err = tx.QueryRowContext(ctx, s.q(`SELECT key_hex FROM organization_backup_keys WHERE organization_id = ?`), organizationID).Scan(&stored)
		}
		if err != nil {
			return s.wrap(err)
		}
		k, err := hex.DecodeString(stored)
		if err != nil || len(k) != backuprepo.KeySize {
			// Never the value itself in an error.
			return fmt.Errorf("organization %s: the stored backup key is malformed (%d hex characters)", organizationID, len(stored))
		}
		key = k
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	return key, nil
}

func nowMS() int64 { return time.Now().UnixMilli() }

func (s *Store) PutMove(ctx context.Context, m store.Move) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM environment_moves WHERE environment_id = ?`), m.EnvironmentID); err != nil {
			return s.wrap(err)
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO environment_moves (environment_id, from_runner_id, to_runner_id, requested_at, requested_by, spec_version, backup_generation) VALUES (?, ?, ?, ?, ?, ?, ?)`),
			m.EnvironmentID, m.FromRunnerID, m.ToRunnerID, ms(m.RequestedAt), m.RequestedBy, m.SpecVersion, m.BackupGeneration)
		return s.wrap(err)
	})
}

func (s *Store) ListMoves(ctx context.Context) ([]store.Move, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT environment_id, from_runner_id, to_runner_id, requested_at, requested_by, spec_version, backup_generation FROM environment_moves ORDER BY requested_at, environment_id`)
	if err != nil {
		return nil, s.wrap(err)
	}
	defer rows.Close()
	var out []store.Move
	for rows.Next() {
		var m store.Move
		var at int64
		if err := rows.Scan(&m.EnvironmentID, &m.FromRunnerID, &m.ToRunnerID, &at, &m.RequestedBy, &m.SpecVersion, &m.BackupGeneration); err != nil {
			return nil, err
		}
		m.RequestedAt = fromMS(at)
		out = append(out, m)
	}
	return out, rows.Err()
}

func (s *Store) DeleteMove(ctx context.Context, environmentID string) error {
	_, err := s.db.ExecContext(ctx, s.q(`DELETE FROM environment_moves WHERE environment_id = ?`), environmentID)
	return s.wrap(err)
}
