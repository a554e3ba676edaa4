package apiserver

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kaccess/kaccess/internal/authn"
)

// violations collects invalid request fields, to be reported all at once.
type violations []*errdetails.BadRequest_FieldViolation

func (v *violations) add(field, description string) {
	*v = append(*v, &errdetails.BadRequest_FieldViolation{Field: field, Description: description})
}

// err is nil when nothing was added, else InvalidArgument whose message names every field
// ("username: required; password: longer than 1024 bytes") and whose details carry a
// google.rpc.BadRequest with one violation per field.
func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	parts := make([]string, 0, len(v))
	for _, fv := range v {
		parts = append(parts, fv.Field+": "+fv.Description)
	}
	st := status.New(codes.InvalidArgument, strings.Join(parts, "; "))
	if withDetails, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: v}); err == nil {
		st = withDetails
	}
	return st.Err()
}

// loginFailure maps an error from a PasswordSource to what the client is told and to the
// outcome label of the "login" log event. The message is the sentinel's own text, which says
// what happened and what to do without revealing whether the user exists; the wrapped detail
// (directory diagnostics) goes to the log only.
func loginFailure(ctx context.Context, err error) (st *status.Status, outcome string) {
	type mapping struct {
		target  error
		code    codes.Code
		outcome string
	}
	for _, m := range []mapping{
		{authn.ErrInvalidCredentials, codes.Unauthenticated, "invalid_credentials"},
		{authn.ErrAccountDisabled, codes.PermissionDenied, "account_disabled"},
		{authn.ErrAccountLocked, codes.PermissionDenied, "account_locked"},
		{authn.ErrPasswordExpired, codes.PermissionDenied, "password_expired"},
		{authn.ErrTooManyAttempts, codes.ResourceExhausted, "rate_limited"},
		{authn.ErrDirectoryUnavailable, codes.Unavailable, "directory_unavailable"},
	} {
		if errors.Is(err, m.target) {
			return status.New(m.code, m.target.Error()), m.outcome
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return status.New(codes.DeadlineExceeded, "the login took longer than the call's deadline"), "deadline_exceeded"
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return status.New(codes.Canceled, "the login was canceled"), "canceled"
	}
	// Anything else is the source failing in a way it did not classify: say so, retryably.
	return status.New(codes.Unavailable, "the login source failed; try again later"), "source_error"
}
