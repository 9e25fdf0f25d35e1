package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

type userService struct{ s *Server }

func toUserProto(u store.User) *covev1.User {
	return &covev1.User{Id: u.ID, Name: u.Name, OrganizationId: u.OrganizationID, Role: u.Role}
}

func (us *userService) WhoAmI(ctx context.Context, _ *connect.Request[covev1.WhoAmIRequest]) (*connect.Response[covev1.WhoAmIResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&covev1.WhoAmIResponse{User: toUserProto(u)}), nil
}

func (us *userService) CreateUser(ctx context.Context, req *connect.Request[covev1.CreateUserRequest]) (*connect.Response[covev1.CreateUserResponse], error) {
	owner, err := requireOwner(ctx)
	if err != nil {
		return nil, err
	}
	role := req.Msg.GetRole()
	if role == "" {
		role = store.RoleMember
	}
	if role != store.RoleMember && role != store.RoleOwner {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("role must be %q or %q", store.RoleOwner, store.RoleMember))
	}
	if !nameRE.MatchString(req.Msg.GetName()) {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("invalid user name"))
	}
	u := store.User{ID: newID("u-"), OrganizationID: owner.OrganizationID, Name: req.Msg.GetName(), Role: role, CreatedAt: us.s.now()}
	if err := us.s.store.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("user %q exists", u.Name))
		}
		return nil, err
	}
	// The new user's first token expires when the creator's does: a
	// short-lived token makes no lasting credentials. It is the new user's
	// own, so revoking the creator's token leaves it alone.
	var exp time.Time
	if t := tokenFrom(ctx); t != nil {
		exp = t.ExpiresAt
	}
	tok, _, err := us.s.issueToken(ctx, u, "initial", "", exp)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&covev1.CreateUserResponse{User: toUserProto(u), Token: tok}), nil
}

// TokenUser returns the user a personal access token belongs to, if the
// token is valid.
func (s *Server) TokenUser(ctx context.Context, tok string) (store.User, error) {
	p, err := s.resolveToken(ctx, tok)
	if err != nil {
		return store.User{}, err
	}
	if p.user == nil {
		return store.User{}, store.ErrNotFound
	}
	return *p.user, nil
}

// Bootstrap makes sure the default organization and its first owner exist
// and returns a token for that owner (used by `cove up` to log the local CLI
// in): reuse, when it is still that owner's valid token, else a new one.
func (s *Server) Bootstrap(ctx context.Context, userName, reuse string) (store.User, string, error) {
	org, err := s.store.GetOrganizationByName(ctx, "default")
	if errors.Is(err, store.ErrNotFound) {
		org = store.Organization{ID: newID("o-"), Name: "default", CreatedAt: s.now()}
		err = s.store.CreateOrganization(ctx, org)
	}
	if err != nil {
		return store.User{}, "", fmt.Errorf("default organization: %w", err)
	}
	u, err := s.store.GetUserByName(ctx, userName)
	if errors.Is(err, store.ErrNotFound) {
		u = store.User{ID: newID("u-"), OrganizationID: org.ID, Name: userName, Role: store.RoleOwner, CreatedAt: s.now()}
		err = s.store.CreateUser(ctx, u)
	}
	if err != nil {
		return store.User{}, "", fmt.Errorf("user %s: %w", userName, err)
	}
	if reuse != "" {
		if owner, err := s.TokenUser(ctx, reuse); err == nil && owner.ID == u.ID {
			return u, reuse, nil
		}
	}
	tok, _, err := s.issueToken(ctx, u, "cove up", "", time.Time{})
	return u, tok, err
}
