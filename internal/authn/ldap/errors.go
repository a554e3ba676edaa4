package ldap

import (
	"errors"
	"fmt"
	"net"
	"regexp"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/kaccess/kaccess/internal/authn"
)

// Login outcomes, the authn package's password-login errors (errors.Is works with either
// name). Login wraps them with %w and the detail for the log (which user, what the directory
// said); the sentinel's own text is what the person may be shown.
var (
	// ErrInvalidCredentials is a wrong password or an unknown user: the person is not told which.
	ErrInvalidCredentials = authn.ErrInvalidCredentials
	// ErrAccountDisabled: the directory says the account is disabled or has expired.
	ErrAccountDisabled = authn.ErrAccountDisabled
	// ErrAccountLocked: locked out after too many wrong passwords.
	ErrAccountLocked = authn.ErrAccountLocked
	// ErrPasswordExpired: the password has expired or must be changed.
	ErrPasswordExpired = authn.ErrPasswordExpired
	// ErrDirectoryUnavailable: no URL could be reached, the service bind failed, or a timeout.
	ErrDirectoryUnavailable = authn.ErrDirectoryUnavailable
)

// reject wraps kind with the detail for the log, naming the source.
func (s *Source) reject(kind error, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", s.source, kind, fmt.Sprintf(format, args...))
}

// adDataCode finds the sub-code in AD's diagnostic message ("... data 533, v4563").
var adDataCode = regexp.MustCompile(`\bdata ([0-9a-fA-F]{3,8})\b`)

// bindFailure classifies the failed bind of a user (never the service account).
func bindFailure(err error) (code string, kind error) {
	var lerr *goldap.Error
	if !errors.As(err, &lerr) {
		return "", ErrDirectoryUnavailable
	}
	if m := adDataCode.FindStringSubmatch(lerr.Err.Error()); m != nil {
		code = m[1]
	}
	switch lerr.ResultCode {
	case goldap.LDAPResultInvalidCredentials:
		switch code {
		case "533", "701": // ACCOUNT_DISABLED, ACCOUNT_EXPIRED
			return code, ErrAccountDisabled
		case "775": // ACCOUNT_LOCKED_OUT
			return code, ErrAccountLocked
		case "532", "773": // PASSWORD_EXPIRED, PASSWORD_MUST_CHANGE
			return code, ErrPasswordExpired
		}
		return code, ErrInvalidCredentials // 52e wrong password, 525 no such user, ...
	case goldap.LDAPResultUnwillingToPerform, goldap.LDAPResultInappropriateAuthentication:
		return code, ErrInvalidCredentials
	}
	return code, ErrDirectoryUnavailable // network, timeout, busy, or something unexpected
}

// isUnavailable says whether err is the directory's fault (network, timeout, server busy)
// rather than the request's.
func isUnavailable(err error) bool {
	var nerr net.Error
	if errors.As(err, &nerr) {
		return true
	}
	var lerr *goldap.Error
	if errors.As(err, &lerr) {
		switch lerr.ResultCode {
		case goldap.ErrorNetwork, goldap.LDAPResultTimeout, goldap.LDAPResultBusy,
			goldap.LDAPResultUnavailable, goldap.ErrorUnexpectedResponse, goldap.LDAPResultServerDown,
			goldap.LDAPResultTimeLimitExceeded, goldap.LDAPResultConnectError, goldap.LDAPResultUnwillingToPerform:
			return true
		}
	}
	return false
}
