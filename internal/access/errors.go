package access

import (
	"errors"
	"strings"
)

// Sentinel errors, wrapped with the detail: callers (the API) tell the cases apart with
// errors.Is and show the message, which says what was wrong and what to do.
var (
	// ErrNotFound: no such request, or the caller may not see it (the two are not told apart,
	// so names of other people's requests do not leak).
	ErrNotFound = errors.New("access request not found")
	// ErrForbidden: the caller may not do this to this request (not a requester of the
	// elevation, not an approver, approving their own request, ...).
	ErrForbidden = errors.New("not allowed")
	// ErrFinal: the request's state does not allow the change (already decided, expired,
	// revoked, or already reviewed by this caller).
	ErrFinal = errors.New("the access request's state does not allow this")
	// ErrUnavailable: the change could not be put on the audit record or stored; nothing was
	// changed, try again.
	ErrUnavailable = errors.New("the access request could not be changed right now")
)

// FieldError is one invalid field of a new request.
type FieldError struct {
	Field, Problem string
}

// InvalidError lists every invalid field of a new request at once.
type InvalidError struct{ Fields []FieldError }

func (e *InvalidError) Error() string {
	parts := make([]string, 0, len(e.Fields))
	for _, f := range e.Fields {
		parts = append(parts, f.Field+": "+f.Problem)
	}
	return "invalid access request: " + strings.Join(parts, "; ")
}

func (e *InvalidError) add(field, problem string) {
	e.Fields = append(e.Fields, FieldError{field, problem})
}

func (e *InvalidError) err() error {
	if len(e.Fields) == 0 {
		return nil
	}
	return e
}
