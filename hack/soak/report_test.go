package soak

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// report is what `make soak` prints and writes as JSON.
type report struct {
	Duration    string         `json:"duration"`
	PhaseLength string         `json:"phaseLength"`
	Phases      []phaseReport  `json:"phases"`
	Audit       *auditReport   `json:"audit"`
	Grant       *grantReport   `json:"grantThroughControllerOutage"`
	Recovery    recoveryReport `json:"replicaKill"`
	// RestartWithoutAPIServer is how long a replica took to come up (alive, not ready) while
	// its API server was stopped.
	RestartWithoutAPIServer string `json:"restartWithoutAPIServer"`

	KillAt time.Time `json:"-"`
}

type phaseReport struct {
	Name     string                  `json:"name"`
	Requests map[string]*classReport `json:"requests"` // by class
	// ExistingSessions: calls (after failover) of sessions made before the soak, ok of total.
	ExistingSessionsOK, ExistingSessions int `json:"-"`
}

type classReport struct {
	Total       int     `json:"total"`
	OK          int     `json:"ok"`          // 2xx
	Refused     int     `json:"refused"`     // 4xx
	Unavailable int     `json:"unavailable"` // 5xx other than a full spool
	SpoolFull   int     `json:"spoolFull"`   // 503: the audit spool could not take records
	NoAnswer    int     `json:"noAnswer"`    // no complete response (connection refused, cut off)
	P50ms       float64 `json:"p50ms"`
	P99ms       float64 `json:"p99ms"`
	// Codes counts the answers by status; Samples holds the first answer of each status
	// other than 2xx, so a reader sees why.
	Codes   map[int]int    `json:"codes"`
	Samples map[int]string `json:"samples,omitempty"`
}

type auditReport struct {
	Answered          int              `json:"answeredProxiedRequests"`
	StoredOnce        int              `json:"storedOnce"`
	StoredTwice       int              `json:"storedMoreThanOnce"`
	Missing           int              `json:"missing"` // events: a watch has two
	MissingSamples    []string         `json:"missingSamples,omitempty"`
	DuplicateEvents   int              `json:"duplicateEvents"`
	RefusedSpoolFull  int              `json:"refusedSpoolFull"`
	GapRecordsRefused int              `json:"gapRecordsRefused"`
	Instances         []instanceReport `json:"instances"`
}

type instanceReport struct {
	Instance string `json:"instance"`
	Produced uint64 `json:"produced"` // highest sequence number: records the spool took
	Stored   uint64 `json:"stored"`
	Gaps     uint64 `json:"gaps"`
}

type grantReport struct {
	Request          string    `json:"request"`
	ExpireTime       time.Time `json:"expireTime"`
	LastAllowed      time.Time `json:"lastAllowed"`
	FirstRefused     time.Time `json:"firstRefused"`
	EndedAfterExpiry string    `json:"endedAfterExpiry"`
	endedAfter       time.Duration
}

type recoveryReport struct {
	ReplicaRestart string `json:"replicaRestart"` // kill to ready again
	// CutOff: the killed replica's calls that got no answer from either replica (in flight
	// at the kill). LongestWait: the longest any of its clients' calls took to be answered by
	// the other replica, as a load balancer sends them. BackOnReplica: from the kill to the
	// first answer the restarted replica gave.
	CutOff        int    `json:"cutOff"`
	LongestWait   string `json:"longestWait"`
	BackOnReplica string `json:"backOnReplica"`
	longestWait   time.Duration
}

// build sorts the outcomes into phases and classes.
func (rep *report) build(names []string, outs []outcome) {
	lat := map[[2]string][]time.Duration{}
	for _, n := range names {
		rep.Phases = append(rep.Phases, phaseReport{Name: n, Requests: map[string]*classReport{}})
	}
	for _, o := range outs {
		if o.class == "" {
			continue
		}
		p := &rep.Phases[o.phase]
		c := p.Requests[o.class]
		if c == nil {
			c = &classReport{Codes: map[int]int{}, Samples: map[int]string{}}
			p.Requests[o.class] = c
		}
		c.Total++
		c.Codes[o.code]++
		if _, ok := c.Samples[o.code]; !ok && o.code >= 300 {
			c.Samples[o.code] = o.body
		}
		switch {
		case o.code == 0:
			c.NoAnswer++
		case o.full:
			c.SpoolFull++
		case o.code < 300:
			c.OK++
		case o.code < 500:
			c.Refused++
		default:
			c.Unavailable++
		}
		if o.code != 0 && o.class != "watch" {
			k := [2]string{p.Name, o.class}
			lat[k] = append(lat[k], o.latency)
		}
		if o.final && o.proxied && o.class != "grant-probe" && o.class != "watch" && !strings.HasPrefix(o.class, "skew") {
			p.ExistingSessions++
			if o.code > 0 && o.code < 300 {
				p.ExistingSessionsOK++
			}
		}
	}
	for i := range rep.Phases {
		p := &rep.Phases[i]
		for class, c := range p.Requests {
			d := lat[[2]string{p.Name, class}]
			slices.Sort(d)
			c.P50ms, c.P99ms = quantile(d, 0.50), quantile(d, 0.99)
		}
	}
	if !rep.KillAt.IsZero() {
		// What the killed replica's clients saw: calls cut off with no answer from either
		// replica, the longest a call waited for its answer (from the other replica), and when
		// the restarted replica answered them again.
		var back time.Time
		for _, o := range outs {
			if o.home != 0 || o.at.Before(rep.KillAt) || o.class == "watch" {
				continue
			}
			if o.replica == 1 && o.code == 0 {
				rep.Recovery.CutOff++
			}
			if o.replica == 1 && o.code != 0 && o.at.Sub(rep.KillAt) < 30*time.Second {
				rep.Recovery.longestWait = max(rep.Recovery.longestWait, o.at.Sub(o.started))
			}
			if o.replica == 0 && o.code > 0 && o.code < 300 && back.IsZero() {
				back = o.at
			}
		}
		rep.Recovery.LongestWait = rep.Recovery.longestWait.Round(time.Millisecond).String()
		if !back.IsZero() {
			rep.Recovery.BackOnReplica = back.Sub(rep.KillAt).Round(time.Millisecond).String()
		}
	}
}

func quantile(d []time.Duration, q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	i := int(q * float64(len(d)-1))
	return float64(d[i].Microseconds()) / 1000
}

// table renders the report for the terminal.
func (rep *report) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nkaccess soak: %s, %d phases of %s, 2 replicas\n\n", rep.Duration, len(rep.Phases), rep.PhaseLength)
	fmt.Fprintf(&b, "%-22s %-12s %7s %7s %7s %7s %7s %7s %9s %9s\n", "phase", "class", "total", "ok", "4xx", "5xx", "full", "noansw", "p50 ms", "p99 ms")
	for _, p := range rep.Phases {
		classes := make([]string, 0, len(p.Requests))
		for c := range p.Requests {
			classes = append(classes, c)
		}
		slices.Sort(classes)
		for _, c := range classes {
			r := p.Requests[c]
			fmt.Fprintf(&b, "%-22s %-12s %7d %7d %7d %7d %7d %7d %9.1f %9.1f\n", p.Name, c, r.Total, r.OK, r.Refused, r.Unavailable, r.SpoolFull, r.NoAnswer, r.P50ms, r.P99ms)
		}
		fmt.Fprintf(&b, "%-22s %-12s %d of %d kubectl-like calls of existing sessions answered 2xx (after failover)\n", p.Name, "sessions", p.ExistingSessionsOK, p.ExistingSessions)
	}
	fmt.Fprintf(&b, "\nwhy answers were not 2xx (first of each phase, class and status):\n")
	seen := map[string]bool{}
	for _, p := range rep.Phases {
		for class, c := range p.Requests {
			for code, body := range c.Samples {
				body = strings.Join(strings.Fields(body), " ")
				key := fmt.Sprint(code) + body[:min(len(body), 80)]
				if seen[key] {
					continue
				}
				seen[key] = true
				fmt.Fprintf(&b, "  %-22s %-12s %d %s\n", p.Name, class, code, body[:min(len(body), 160)])
			}
		}
	}
	if a := rep.Audit; a != nil {
		fmt.Fprintf(&b, "\nzero loss: %d proxied requests answered, %d stored once, %d stored more than once, %d missing; %d duplicate events\n",
			a.Answered, a.StoredOnce, a.StoredTwice, a.Missing, a.DuplicateEvents)
		for _, m := range a.MissingSamples {
			fmt.Fprintf(&b, "           missing: %s\n", m)
		}
		fmt.Fprintf(&b, "           %d refused up front with a full spool, %d counted by spool_full gap records\n", a.RefusedSpoolFull, a.GapRecordsRefused)
		for _, in := range a.Instances {
			fmt.Fprintf(&b, "           instance %s: %d records produced, %d stored, %d sequence gaps\n", in.Instance, in.Produced, in.Stored, in.Gaps)
		}
	}
	if g := rep.Grant; g != nil {
		fmt.Fprintf(&b, "\ngrant expiry with the controllers down (Lease held elsewhere): %s expired %s, last allowed %s, first refused %s: access ended %s after expiry\n",
			g.Request, g.ExpireTime.Format("15:04:05.000"), g.LastAllowed.Format("15:04:05.000"), g.FirstRefused.Format("15:04:05.000"), g.EndedAfterExpiry)
	}
	fmt.Fprintf(&b, "replica kill: %d of its clients' calls cut off, the longest wait for an answer from the other replica %s; restarted and ready %s after its start, answering again %s after the kill\n",
		rep.Recovery.CutOff, rep.Recovery.LongestWait, rep.Recovery.ReplicaRestart, rep.Recovery.BackOnReplica)
	fmt.Fprintf(&b, "replica start while the API server was stopped: alive in %s\n", rep.RestartWithoutAPIServer)
	return b.String()
}

// check fails the soak on what must hold whatever failed around it.
func (rep *report) check(t *testing.T) {
	a := rep.Audit
	if a == nil || a.Answered == 0 {
		t.Fatal("no answered requests to check")
	}
	if a.Missing != 0 || a.StoredTwice != 0 || a.DuplicateEvents != 0 {
		t.Errorf("audit record: %d missing, %d stored more than once, %d duplicate events", a.Missing, a.StoredTwice, a.DuplicateEvents)
	}
	for _, in := range a.Instances {
		if in.Gaps != 0 || in.Produced != in.Stored {
			t.Errorf("instance %s: %d produced, %d stored, %d gaps", in.Instance, in.Produced, in.Stored, in.Gaps)
		}
	}
	if a.GapRecordsRefused < a.RefusedSpoolFull {
		t.Errorf("%d requests refused with a full spool, gap records count %d", a.RefusedSpoolFull, a.GapRecordsRefused)
	}
	if g := rep.Grant; g == nil || g.FirstRefused.IsZero() || g.endedAfter > time.Second {
		t.Errorf("grant through a controller outage: %+v; access must end within 1 s of expiry", g)
	}
	for _, p := range rep.Phases {
		if s := p.Requests["skew-30s"]; s != nil && s.OK != s.Total-s.SpoolFull {
			t.Errorf("tokens 30 s ahead (within the leeway): %+v", s)
		}
		if s := p.Requests["skew-90s"]; s != nil && s.Refused != s.Total {
			t.Errorf("tokens 90 s ahead (beyond the leeway): %+v", s)
		}
		if p.Name == "ad-stopped" && p.ExistingSessionsOK*100 < p.ExistingSessions*99 {
			t.Errorf("existing sessions during the directory outage: %d of %d ok", p.ExistingSessionsOK, p.ExistingSessions)
		}
	}
}
