package authn

import (
	"context"
	"errors"
)

// PasswordSource checks a login name and password against a directory (LDAP, Active Directory)
// and returns the person's identity, groups included.
//
// Errors: a source returns one of the sentinel errors below, wrapped with %w and whatever detail
// helps an operator (the directory's diagnostic, the server tried), so callers can tell the
// cases apart with errors.Is and show the person a safe message while the log keeps the detail.
// Any other error is treated as the source failing (Unavailable to the client).
type PasswordSource interface {
	Login(ctx context.Context, username, password string) (*Identity, error)
}

// PasswordFunc adapts a function to PasswordSource (handy in tests).
type PasswordFunc func(ctx context.Context, username, password string) (*Identity, error)

// Login calls f.
func (f PasswordFunc) Login(ctx context.Context, username, password string) (*Identity, error) {
	return f(ctx, username, password)
}

// Password login errors. A wrong password and an unknown user are both ErrInvalidCredentials,
// so nobody can learn which users exist. The texts are safe to show to the person logging in.
var (
	// ErrInvalidCredentials: unknown user or wrong password.
	ErrInvalidCredentials = errors.New("invalid username or password")
	// ErrAccountDisabled: the account exists and the password may be right, but it is disabled
	// (AD userAccountControl ACCOUNTDISABLE, "data 533"). Returned only after the password checked
	// out, or where the directory itself says so, so it reveals nothing to a guesser.
	ErrAccountDisabled = errors.New("the account is disabled; ask your directory administrator")
	// ErrAccountLocked: locked out after too many wrong passwords (AD "data 775").
	ErrAccountLocked = errors.New("the account is locked; wait, or ask your directory administrator to unlock it")
	// ErrPasswordExpired: the password must be changed before logging in (AD "data 532"/"773").
	ErrPasswordExpired = errors.New("the password has expired or must be changed; change it, then log in again")
	// ErrDirectoryUnavailable: no directory server could be reached or the service bind failed.
	ErrDirectoryUnavailable = errors.New("the directory is unavailable; try again later")
	// ErrTooManyAttempts: the gateway's own rate limit for this user or client address.
	ErrTooManyAttempts = errors.New("too many failed login attempts; wait and try again")
)

type clientAddressKey struct{}

// WithClientAddress returns ctx carrying the address (host:port or host) of the client that a
// login comes from, so a PasswordSource can rate-limit failures per client as well as per user.
func WithClientAddress(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, clientAddressKey{}, addr)
}

// ClientAddressFrom returns the address stored by WithClientAddress, or "".
func ClientAddressFrom(ctx context.Context) string {
	addr, _ := ctx.Value(clientAddressKey{}).(string)
	return addr
}
