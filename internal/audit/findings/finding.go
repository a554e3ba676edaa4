// Package findings runs the detections of internal/audit/detect on a schedule and keeps what
// they find: each finding has a stable fingerprint, a state (firing, acknowledged, silenced,
// resolved) and the ids of its evidence events, stored in the audit store's findings table
// before anything is delivered, so a restart, a rerun or a new leader never alerts twice and
// never loses an alert. Every change of state is an audit event.
package findings

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// State is where a finding is in its life.
type State string

// States. Firing, Acknowledged and Silenced are open: the detection still sees the activity.
// Resolved is final: a later occurrence is a new finding.
const (
	Firing       State = "firing"       // new and delivered (or being delivered) as an alert
	Acknowledged State = "acknowledged" // an auditor took it; its alert is ended
	Silenced     State = "silenced"     // a configured suppression names it; never delivered
	Resolved     State = "resolved"     // the detection no longer sees it
)

// Open reports whether the detection may still see the finding.
func (s State) Open() bool { return s == Firing || s == Acknowledged || s == Silenced }

// Valid reports whether s is one of the states.
func (s State) Valid() bool { return s.Open() || s == Resolved }

// Finding is one stored finding: what a detection found about a subject, and what became of it.
type Finding struct {
	Fingerprint   string
	Detection     string
	Cluster       string
	Subject       string
	Scope         string // what besides the subject tells findings apart (a namespace, an address)
	Severity      string
	TechniqueID   string
	TechniqueName string
	Summary       string
	State         State
	FirstSeen     time.Time // earliest evidence
	LastSeen      time.Time // latest evidence
	Count         uint64    // events behind the finding in the largest window that saw it
	EventIDs      []string  // evidence, earliest first
	Window        time.Duration
	CreatedAt     time.Time
	UpdatedAt     time.Time
	ResolvedAt    time.Time // zero while open
	Reason        string    // why it was acknowledged or silenced
	Actor         string    // who acknowledged it; the suppression's pattern when silenced
	// NotifiedFiring: the alert went out (to every configured receiver). NotifiedResolved:
	// its end went out too. Both are kept in the store, so a new leader knows what is owed.
	NotifiedFiring   bool
	NotifiedResolved bool
	Version          uint64 // higher wins (ReplacingMergeTree)
}

// key identifies what a finding is about, apart from when.
func (f *Finding) key() string {
	return strings.Join([]string{f.Detection, f.Cluster, f.Subject, f.Scope}, "\x00")
}

// Fingerprint is the stable id of a finding: detection, cluster, subject and scope, and the
// window-aligned bucket its first evidence falls into. A rerun over the same data, another
// replica, or the same replica after a restart computes the same value.
func Fingerprint(detection, cluster, subject, scope string, firstSeen time.Time, window time.Duration) string {
	bucket := firstSeen.UTC().Truncate(window).Unix()
	h := sha256.New()
	for _, s := range []string{detection, cluster, subject, scope, strconv.FormatInt(bucket, 10), strconv.FormatInt(int64(window/time.Second), 10)} {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
		h.Write([]byte{';'})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}
