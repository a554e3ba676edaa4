// Package requestctx carries per-request state through the handler chain under an unexported key.
package requestctx

import (
	"context"

	"github.com/kaccess/kaccess/internal/authn"
)

// State is filled in as a request passes the chain. Outer steps (logging, metrics, later audit)
// read what inner steps (authentication) found, so it is shared by pointer.
type State struct {
	// ID is the gateway's id for the request, also sent upstream as the audit ID.
	ID string
	// LongRunning is set with the request info: watch, exec, attach, port-forward, proxy,
	// log -f, or any upgrade. Such requests get no timeout and no latency sample.
	LongRunning bool
	// User and Source are set once the request is authenticated.
	User, Source string
	// Identity is the authenticated identity (nil until then, and for refused credentials).
	Identity *authn.Identity
	// ImpersonatedUser and ImpersonatedGroups are what a client asked to act as (kubectl
	// --as), set before the check so refused attempts are on record too.
	ImpersonatedUser   string
	ImpersonatedGroups []string
	// GrantIDs are the access grants (approved requests) in force that added groups.
	GrantIDs []string
	// Forwarded is set when the request is handed to the API server: the response is then the
	// API server's, unless Refusal says the gateway answered after all (a timeout, say).
	Forwarded bool
	// Refusal is why the gateway answered the request itself (set with Refuse); empty when the
	// answer is the API server's. RefusedHeaders names the identity headers refused.
	Refusal        Refusal
	RefusedHeaders []string
}

type stateKey struct{}

// WithState returns ctx carrying s.
func WithState(ctx context.Context, s *State) context.Context {
	return context.WithValue(ctx, stateKey{}, s)
}

// From returns the request's state, or nil outside a request.
func From(ctx context.Context) *State {
	s, _ := ctx.Value(stateKey{}).(*State)
	return s
}

// RequestID returns the request's id, or "".
func RequestID(ctx context.Context) string {
	if s := From(ctx); s != nil {
		return s.ID
	}
	return ""
}
