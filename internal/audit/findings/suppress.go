package findings

import (
	"path"
	"time"
)

// Suppression silences what it names: findings whose subject (or scope, for a namespace)
// matches its patterns, of one detection or of all. Patterns are path.Match globs ("ci-*").
type Suppression struct {
	Subject   string // glob over the finding's subject; empty matches any
	Namespace string // glob over the finding's scope where it is a namespace; empty matches any
	Detection string // one detection's name; empty: every detection
	Reason    string
	Expires   time.Time // zero: never
}

// matches reports whether s silences f at now. A suppression with neither Subject nor
// Namespace names nothing (configuration refuses it).
func (s Suppression) matches(f *Finding, now time.Time) bool {
	if s.Subject == "" && s.Namespace == "" {
		return false
	}
	if !s.Expires.IsZero() && !now.Before(s.Expires) {
		return false
	}
	if s.Detection != "" && s.Detection != f.Detection {
		return false
	}
	if s.Subject != "" {
		if ok, _ := path.Match(s.Subject, f.Subject); !ok {
			return false
		}
	}
	if s.Namespace != "" {
		if ok, _ := path.Match(s.Namespace, f.Scope); !ok {
			return false
		}
	}
	return true
}

// describe is how a suppression is named on a silenced finding.
func (s Suppression) describe() string {
	d := "suppression"
	if s.Detection != "" {
		d += " of " + s.Detection
	}
	if s.Subject != "" {
		d += " subject=" + s.Subject
	}
	if s.Namespace != "" {
		d += " namespace=" + s.Namespace
	}
	return d
}
