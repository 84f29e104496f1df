// Package grpchandler serves duet.user.v1.UserService over gRPC: it turns
// requests into domain calls and domain results and errors into responses
// and status errors with details.
package grpchandler

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"

	userv1 "github.com/duetkit/duet/gen/duet/user/v1"
	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/kit/pagetoken"
	"github.com/duetkit/duet/kit/sqldb"
	"github.com/duetkit/duet/services/user/domain"
	"github.com/duetkit/duet/services/user/wire"
)

// Reasons (ErrorInfo.reason) specific to the user service. Published: never
// change them.
const (
	ReasonUserNotFound = "USER_NOT_FOUND"
	ReasonEmailTaken   = "EMAIL_TAKEN"
)

// listScope is the page-token scope of ListUsers.
const listScope = "users"

// Handler implements userv1.UserServiceServer over a domain.Service.
type Handler struct {
	userv1.UnimplementedUserServiceServer
	users *domain.Service
	log   *slog.Logger
}

var _ userv1.UserServiceServer = (*Handler)(nil)

// New returns a Handler for users. Unexpected errors are logged to logger
// (nil means slog.Default()) and answered with a bare INTERNAL.
func New(users *domain.Service, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.Default()
	}
	return &Handler{users: users, log: logger}
}

// CreateUser registers a user.
func (h *Handler) CreateUser(ctx context.Context, req *userv1.CreateUserRequest) (*userv1.CreateUserResponse, error) {
	u, err := h.users.Create(ctx, req.GetEmail(), req.GetName())
	if err != nil {
		return nil, h.error(ctx, err, "", "")
	}
	return &userv1.CreateUserResponse{User: wire.User(u)}, nil
}

// GetUser returns one user.
func (h *Handler) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	u, err := h.users.Get(ctx, req.GetId())
	if err != nil {
		return nil, h.error(ctx, err, "", req.GetId())
	}
	return &userv1.GetUserResponse{User: wire.User(u)}, nil
}

// ListUsers returns one page of users, oldest first.
func (h *Handler) ListUsers(ctx context.Context, req *userv1.ListUsersRequest) (*userv1.ListUsersResponse, error) {
	var after *domain.Position
	if tok := req.GetPageToken(); tok != "" {
		c, err := pagetoken.Decode(tok, listScope)
		if err != nil {
			return nil, apierr.InvalidField("page_token", "not a page token from a previous ListUsers response")
		}
		after = &domain.Position{CreateTime: c.Time, ID: c.ID}
	}
	page, err := h.users.List(ctx, int(req.GetPageSize()), after)
	if err != nil {
		return nil, h.error(ctx, err, "", "")
	}
	resp := &userv1.ListUsersResponse{Users: make([]*userv1.User, 0, len(page.Users))}
	for _, u := range page.Users {
		resp.Users = append(resp.Users, wire.User(u))
	}
	if page.Next != nil {
		resp.NextPageToken = pagetoken.Encode(pagetoken.Cursor{Scope: listScope, Time: page.Next.CreateTime, ID: page.Next.ID})
	}
	return resp, nil
}

// UpdateUser changes the fields named in update_mask. The mask is required:
// over REST the gateway fills it from the fields present in the body.
func (h *Handler) UpdateUser(ctx context.Context, req *userv1.UpdateUserRequest) (*userv1.UpdateUserResponse, error) {
	in := req.GetUser()
	if in == nil {
		return nil, apierr.InvalidField("user", "is required")
	}
	paths := req.GetUpdateMask().GetPaths()
	u, err := h.users.Update(ctx, in.GetId(), paths, domain.Changes{Email: in.GetEmail(), Name: in.GetName()})
	if err != nil {
		return nil, h.error(ctx, err, "user.", in.GetId())
	}
	return &userv1.UpdateUserResponse{User: wire.User(u)}, nil
}

// error maps a domain error to a status error. prefix is the request path of
// the user message ("user." in UpdateUser) for field violations; id names
// the user the call was about.
func (h *Handler) error(ctx context.Context, err error, prefix, id string) error {
	var invalid *domain.ValidationError
	switch {
	case errors.As(err, &invalid):
		field := invalid.Field
		if field != "update_mask" && field != "page_size" {
			field = prefix + field
		}
		return apierr.InvalidField(field, invalid.Description)
	case errors.Is(err, domain.ErrNotFound):
		return apierr.NotFound(ReasonUserNotFound, "user", id)
	case errors.Is(err, domain.ErrEmailTaken):
		return apierr.New(codes.AlreadyExists, ReasonEmailTaken, "email already in use by another user",
			apierr.Field(prefix+"email", "already in use by another user"))
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		// Drivers do not always wrap the context's error, so the context
		// itself is asked too: a call that ran out of time is not a bug.
		return apierr.New(codes.DeadlineExceeded, apierr.ReasonDeadline, "deadline exceeded")
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return apierr.New(codes.Canceled, apierr.ReasonCanceled, "request canceled")
	}
	if sqldb.IsConflict(err) {
		return apierr.Conflict()
	}
	if sqldb.IsUnavailable(err) {
		h.log.WarnContext(ctx, "user service: database unavailable", "error", err)
		return apierr.StoreUnavailable()
	}
	h.log.ErrorContext(ctx, "user service: unexpected error", "error", err)
	return apierr.Internal()
}
