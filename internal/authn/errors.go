package authn

import (
	"errors"
	"fmt"
)

// RejectedError is a credential that a source recognised as its own and found not valid.
// Reason is a short label for metrics; Message is safe to show the client.
type RejectedError struct {
	Source  string
	Reason  string
	Message string
	Err     error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("%s credential rejected (%s): %v", e.Source, e.Reason, e.Err)
}

func (e *RejectedError) Unwrap() error { return e.Err }

// FailureReason maps an authentication error to a bounded metrics label.
func FailureReason(err error) string {
	var rej *RejectedError
	switch {
	case errors.As(err, &rej):
		return rej.Reason
	case errors.Is(err, ErrNoCredential):
		return "no_credential"
	case errors.Is(err, ErrNotBearer):
		return "not_bearer"
	case errors.Is(err, ErrMultipleCredential):
		return "multiple_credentials"
	case errors.Is(err, ErrBadWebSocketToken):
		return "malformed"
	case errors.Is(err, ErrUnrecognized):
		return "unrecognized"
	default:
		return "error"
	}
}

// ClientMessage is what the client is told: what was wrong and what to do, never a token.
func ClientMessage(err error) string {
	var rej *RejectedError
	switch {
	case errors.As(err, &rej):
		return rej.Message
	case errors.Is(err, ErrUnrecognized):
		return "the token is not one the gateway issued or accepts; run `kaccess login`"
	case errors.Is(err, ErrNoCredential), errors.Is(err, ErrNotBearer),
		errors.Is(err, ErrMultipleCredential), errors.Is(err, ErrBadWebSocketToken):
		return err.Error()
	default:
		return "the credential could not be checked; try again"
	}
}
