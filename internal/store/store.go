// Package store defines cove's persistent state: organizations, users,
// tokens, runners and environments. Implementations (sqlite/, later
// postgres/) share one set of SQL and pass the conformance suite in
// storetest.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/covedev/cove/internal/errdefs"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

var (
	// ErrNotFound: the record does not exist (category NotFound, which
	// the API answers with CodeNotFound).
	ErrNotFound = errdefs.NotFound(errors.New("not found"))
	// ErrAlreadyExists: a unique key (name, token) is taken (category
	// AlreadyExists).
	ErrAlreadyExists = errdefs.AlreadyExists(errors.New("already exists"))
	// ErrConflict: the record changed or was used in between (e.g. a join
	// token already consumed).
	ErrConflict = errors.New("conflict")
)

// Roles of a member in an organization.
const (
	RoleOwner  = "owner"
	RoleMember = "member"
)

type Organization struct {
	ID, Name  string
	CreatedAt time.Time
}

type User struct {
	ID, OrganizationID, Name, Role string
	CreatedAt                      time.Time
}

// Token is a personal access token; only its hash is stored.
type Token struct {
	ID, UserID, Name, Hash string
	// ParentID is the token that created this one ("" if none).
	ParentID  string
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
}

// JoinToken lets one runner join, once.
type JoinToken struct {
	Hash      string
	CreatedBy string
	ExpiresAt time.Time
}

// Runner is a host that runs environments.
type Runner struct {
	ID, Name     string
	TokenHash    string
	Phase        covev1.RunnerPhase
	Capabilities *covev1.RunnerCapabilities
	LastSeen     time.Time
	CreatedAt    time.Time
}

// Backup is the record of one committed backup of an environment (its
// manifest, named ID, is in the backup storage).
type Backup struct {
	ID, EnvironmentID, OrganizationID, RunnerID, Trigger, Previous string
	// Time is when the runner took it, by the runner's clock (shown to
	// users). ReceivedAt is when the server recorded it, by the server's
	// clock: the order of an environment's backups ("latest"), which no
	// runner's clock decides. Zero ReceivedAt: CreateBackup uses Time.
	Time, ReceivedAt                                                       time.Time
	Files, Bytes, BytesNew, BytesReused, StoredBytes, DurationMS, FrozenMS int64
	// Paths not backed up (sockets, devices, FIFOs).
	Skipped []string
}

// Move is a pending move of an environment to another runner: the server
// waits until FromRunnerID has stopped it (SpecVersion observed) and backed
// it up (BackupGeneration observed), then assigns it to ToRunnerID.
type Move struct {
	EnvironmentID, FromRunnerID, ToRunnerID, RequestedBy string
	RequestedAt                                          time.Time
	SpecVersion, BackupGeneration                        int64
}

// Release records that an environment left runner RunnerID (moved or
// rescheduled to another runner, or deleted without it): that runner is
// sent a DELETED copy of the environment until it reports its copy
// deleted, which ends the release.
type Release struct {
	EnvironmentID, RunnerID string
	CreatedAt               time.Time
	// Ran: the environment ran on that runner since it was assigned
	// there, so the copy may hold changes no backup has; only such a
	// copy may be salvaged (review REV-S8-3).
	Ran bool
}

// EnvironmentFilter selects environments; zero values match everything.
type EnvironmentFilter struct {
	OwnerID        string
	RunnerID       string
	IncludeDeleted bool
	// Only environments whose revision is greater than this.
	SinceRevision int64
	// Only environments without a runner.
	Unassigned bool
}

// Store is cove's persistent state. Every environment write bumps a
// store-wide revision and stamps it on the environment, so watchers can
// resume from a revision and miss no environment's latest state.
type Store interface {
	CreateOrganization(ctx context.Context, o Organization) error
	GetOrganizationByName(ctx context.Context, name string) (Organization, error)
	CreateUser(ctx context.Context, u User) error
	GetUser(ctx context.Context, id string) (User, error)
	GetUserByName(ctx context.Context, name string) (User, error)
	CreateToken(ctx context.Context, t Token) error
	GetToken(ctx context.Context, id string) (Token, error)
	GetTokenByHash(ctx context.Context, hash string) (Token, error)
	// ListTokens returns the user's tokens (expired ones too), oldest first.
	ListTokens(ctx context.Context, userID string) ([]Token, error)
	// DeleteToken deletes the user's token id and, recursively, the tokens
	// it created, in one transaction, and returns their ids (id first).
	// ErrNotFound if the user has no token id.
	DeleteToken(ctx context.Context, userID, id string) ([]string, error)
	// DeleteExpiredTokens deletes tokens that expired before now.
	DeleteExpiredTokens(ctx context.Context, now time.Time) error

	CreateJoinToken(ctx context.Context, t JoinToken) error
	// JoinRunner consumes the join token with hash joinHash and creates r, in
	// one transaction: ErrNotFound if the token is unknown or expired at
	// now, ErrConflict if already used. If r cannot be created, the token
	// stays unused.
	JoinRunner(ctx context.Context, joinHash string, r Runner, now time.Time) error
	GetRunner(ctx context.Context, id string) (Runner, error)
	// GetRunnerByTokenHash finds the runner whose token, or pending token,
	// has this hash. The first use of a pending token makes it the
	// runner's token; the previous one then stops working.
	GetRunnerByTokenHash(ctx context.Context, hash string) (Runner, error)
	// SetRunnerNextToken records hash as the runner's pending token
	// (replacing a pending one); the current token works until then.
	SetRunnerNextToken(ctx context.Context, id, hash string) error
	// RevokeRunnerTokens makes the runner's tokens stop working; the record
	// stays until DeleteRunner.
	RevokeRunnerTokens(ctx context.Context, id string) error
	DeleteRunner(ctx context.Context, id string) error
	// UpdateRunner writes phase, capabilities and last-seen time.
	UpdateRunner(ctx context.Context, r Runner) error
	// TouchRunner records a heartbeat: the runner ACTIVE, seen at now,
	// with caps. wasInactive says it was not ACTIVE just before (decided
	// in the same statement as the write, so a concurrent
	// MarkRunnerInactive is never lost either way).
	TouchRunner(ctx context.Context, id string, caps *covev1.RunnerCapabilities, now time.Time) (wasInactive bool, err error)
	// MarkRunnerInactive sets an ACTIVE runner last seen before seenBefore
	// INACTIVE; false when it is not (any more): a heartbeat that came in
	// after the caller read the runner wins.
	MarkRunnerInactive(ctx context.Context, id string, seenBefore time.Time) (bool, error)
	ListRunners(ctx context.Context) ([]Runner, error)

	// CreateEnvironment stores env (its id and metadata set by the caller)
	// and returns it with its revision. ErrAlreadyExists if the owner has a
	// live environment of that name.
	CreateEnvironment(ctx context.Context, env *covev1.Environment) (*covev1.Environment, error)
	GetEnvironment(ctx context.Context, id string) (*covev1.Environment, error)
	// GetEnvironmentByName finds the owner's live (not DELETED) environment.
	GetEnvironmentByName(ctx context.Context, ownerID, name string) (*covev1.Environment, error)
	// ListEnvironments returns matching environments ordered by revision.
	ListEnvironments(ctx context.Context, f EnvironmentFilter) ([]*covev1.Environment, error)
	// UpdateEnvironment reads the environment, applies fn and writes it back
	// in one transaction with a new revision. If fn returns an error nothing
	// is written and the error is returned.
	UpdateEnvironment(ctx context.Context, id string, fn func(*covev1.Environment) error) (*covev1.Environment, error)
	// Revision is the store-wide revision of the latest environment write.
	Revision(ctx context.Context) (int64, error)
	// Changes returns a channel that receives a value after environment
	// writes commit (coalesced; a receiver re-reads from its revision).
	// The channel is closed when ctx is done.
	Changes(ctx context.Context) <-chan struct{}

	// CreateBackup records a committed backup; ErrAlreadyExists if its id
	// is taken.
	CreateBackup(ctx context.Context, b Backup) error
	// ListBackups returns the environment's backups, newest (by
	// ReceivedAt, then Time) first.
	ListBackups(ctx context.Context, environmentID string) ([]Backup, error)
	// ListOrganizationBackups returns the organization's backups, newest
	// first.
	ListOrganizationBackups(ctx context.Context, organizationID string) ([]Backup, error)
	// DeleteBackup deletes the record; deleting a missing one succeeds.
	DeleteBackup(ctx context.Context, id string) error
	// ListOrganizations returns every organization, oldest first.
	ListOrganizations(ctx context.Context) ([]Organization, error)
	// OrganizationBackupKey returns the organization's backup key
	// (backuprepo.KeySize bytes), made on first use in one transaction, so
	// concurrent first uses get the same key; it never changes after.
	OrganizationBackupKey(ctx context.Context, organizationID string) ([]byte, error)
	// PutMove records (or replaces) the environment's pending move.
	PutMove(ctx context.Context, m Move) error
	// ListMoves returns every pending move, oldest first.
	ListMoves(ctx context.Context) ([]Move, error)
	// DeleteMove ends the environment's pending move; none is not an error.
	DeleteMove(ctx context.Context, environmentID string) error
	// PutRelease records a release; one already recorded is kept as it is.
	PutRelease(ctx context.Context, r Release) error
	// ListReleases returns the runner's releases, oldest first.
	ListReleases(ctx context.Context, runnerID string) ([]Release, error)
	// GetRelease returns one release, ErrNotFound if there is none.
	GetRelease(ctx context.Context, environmentID, runnerID string) (Release, error)
	// DeleteRelease ends a release; none is not an error.
	DeleteRelease(ctx context.Context, environmentID, runnerID string) error

	Close() error
}
