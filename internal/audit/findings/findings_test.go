package findings

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/detect"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// openStore is a fresh embedded audit store (schema migrated, findings table included).
func openStore(t *testing.T) *chdb.Store {
	t.Helper()
	lib, helper := testenv.ChDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := chdb.Open(ctx, chdb.Config{Dir: t.TempDir(), Library: lib, Helper: helper})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var seq uint64

// execs writes n exec requests by user into namespace ns, starting at at, one a second.
func execs(t *testing.T, s *chdb.Store, user, ns string, at time.Time, n int) []string {
	t.Helper()
	var evs []*event.Event
	var ids []string
	for i := range n {
		e := event.New(event.KindRequest, at.Add(time.Duration(i)*time.Second))
		e.Cluster, e.User, e.SourceIP = "prod", user, "10.0.0.9"
		e.Verb, e.Resource, e.Subresource, e.Namespace, e.Name = "create", "pods", "exec", ns, "coredns-1"
		e.SetResponse(101)
		seq++
		e.GatewayInstance, e.Seq = "findings-test", seq
		evs = append(evs, e)
		ids = append(ids, e.EventID)
	}
	if err := s.Write(context.Background(), fmt.Sprintf("tok-%d", seq), evs); err != nil {
		t.Fatal(err)
	}
	return ids
}

// recorder keeps the audit events of state changes; fail makes it refuse them.
type recorder struct {
	mu     sync.Mutex
	events []*event.Event
	fail   bool
}

func (r *recorder) Record(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errors.New("spool full")
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) verbs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		out = append(out, e.Verb+":"+e.Extra["subject"])
	}
	return out
}

// receiver keeps what was delivered; down makes it fail.
type receiver struct {
	mu   sync.Mutex
	got  []Notification
	down bool
}

func (r *receiver) Deliver(_ context.Context, ns []Notification) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return errors.New("connection refused")
	}
	r.got = append(r.got, ns...)
	return nil
}

func (r *receiver) kinds() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, n := range r.got {
		out = append(out, string(n.Kind)+":"+n.Finding.Subject)
	}
	return out
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func execRule(t *testing.T) Rule {
	t.Helper()
	lib, err := detect.Config{}.Library()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(lib, func(d detect.Detection) bool { return d.Name == "exec-protected-namespace" })
	return Rule{Detection: lib[i], Interval: time.Second, Window: 10 * time.Minute}
}

func TestLifecycle(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	clk := &clock{t: time.Now().UTC().Truncate(time.Minute).Add(-time.Hour)}
	execs(t, s, "dave", "kube-system", clk.now().Add(-2*time.Minute), 3)
	execs(t, s, "ci-bot", "kube-system", clk.now().Add(-time.Minute), 2)
	execs(t, s, "erin", "default", clk.now().Add(-time.Minute), 2) // not protected: no finding

	rec, rcv := &recorder{}, &receiver{}
	store := &Store{DB: s}
	newSched := func() *Scheduler {
		sc, err := New(Config{
			Store: store, Querier: s, Rules: []Rule{execRule(t)}, Recorder: rec, Deliverer: rcv,
			Suppressions: []Suppression{
				{Subject: "ci-*", Detection: "exec-protected-namespace", Reason: "CI smoke test"},
				{Subject: "dave", Reason: "expired", Expires: clk.now().Add(-time.Hour)},
			},
			ResendInterval: time.Minute, Now: clk.now,
		})
		if err != nil {
			t.Fatal(err)
		}
		return sc
	}
	sc := newSched()
	rule := execRule(t)
	if err := sc.RunRule(ctx, rule); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.verbs(), []string{"firing:dave", "silenced:ci-bot"}; !sameSet(got, want) {
		t.Fatalf("state events %v, want %v", got, want)
	}
	all, _, err := store.List(ctx, ListRequest{})
	if err != nil || len(all) != 2 {
		t.Fatalf("List: %d findings, %v; want 2", len(all), err)
	}
	dave := find(all, "dave")
	if dave.State != Firing || dave.Scope != "kube-system" || len(dave.EventIDs) != 3 || dave.TechniqueID != "T1609" {
		t.Errorf("dave's finding %+v", dave)
	}
	if ci := find(all, "ci-bot"); ci.State != Silenced || ci.Reason != "CI smoke test" {
		t.Errorf("ci-bot's finding %+v: want silenced by its suppression", ci)
	}

	// A rerun, and a new scheduler (a restart, or another replica taking the Lease), change nothing.
	clk.add(5 * time.Second)
	if err := sc.RunRule(ctx, rule); err != nil {
		t.Fatal(err)
	}
	sc2 := newSched()
	if err := sc2.RunRule(ctx, rule); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.verbs()); n != 2 {
		t.Fatalf("reruns recorded %d state events, want the 2 of the first run: %v", n, rec.verbs())
	}

	// Delivery: the receiver is down first; nothing is lost, and only dave's is sent.
	rcv.down = true
	if err := sc2.DeliverOnce(ctx); err == nil {
		t.Fatal("delivery to a receiver that is down reported success")
	}
	rcv.down = false
	sc3 := newSched() // the next leader delivers what the last one could not
	if err := sc3.DeliverOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sc3.DeliverOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rcv.kinds(); !slices.Equal(got, []string{"new:dave"}) {
		t.Fatalf("delivered %v, want one new alert for dave (ci-bot is silenced)", got)
	}
	clk.add(61 * time.Second)
	if err := sc3.DeliverOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rcv.kinds(); !slices.Equal(got, []string{"new:dave", "repeat:dave"}) {
		t.Fatalf("after the resend interval delivered %v, want a repeat", got)
	}

	// Acknowledged: recorded with who and why; its alert ends; a second ack is refused.
	if _, err := sc.Acknowledge(ctx, dave.Fingerprint, "carol", "incident 42", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Acknowledge(ctx, dave.Fingerprint, "carol", "again", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("second acknowledge: %v, want ErrInvalid", err)
	}
	if err := sc3.DeliverOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rcv.kinds(); len(got) != 2 {
		t.Fatalf("the end went out %v within a resend interval of the last alert; want it held", got)
	}
	clk.add(61 * time.Second)
	if err := sc3.DeliverOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rcv.kinds(); !slices.Equal(got, []string{"new:dave", "repeat:dave", "resolve:dave"}) {
		t.Fatalf("after acknowledging delivered %v, want the alert ended", got)
	}

	// Past the window the detection sees nothing: both resolve, each once, nothing more is sent.
	clk.add(15 * time.Minute)
	if err := sc3.RunRule(ctx, rule); err != nil {
		t.Fatal(err)
	}
	if err := sc3.RunRule(ctx, rule); err != nil {
		t.Fatal(err)
	}
	if err := sc3.DeliverOnce(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"firing:dave", "silenced:ci-bot", "acknowledged:dave", "resolved:dave", "resolved:ci-bot"}
	if got := rec.verbs(); !sameSet(got, want) || len(got) != len(want) {
		t.Errorf("state events %v, want %v", got, want)
	}
	if got := rcv.kinds(); len(got) != 3 {
		t.Errorf("delivered %v after resolving, want nothing more (the acknowledged alert had ended)", got)
	}
	res, _, err := store.List(ctx, ListRequest{State: Resolved})
	if err != nil || len(res) != 2 {
		t.Fatalf("resolved findings %d, %v; want 2", len(res), err)
	}
}

func TestResolveEndsAlertAndAuditFailureChangesNothing(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	clk := &clock{t: time.Now().UTC().Truncate(time.Minute).Add(-2 * time.Hour)}
	execs(t, s, "mallory", "kube-public", clk.now().Add(-30*time.Second), 1)
	rec, rcv := &recorder{fail: true}, &receiver{}
	sc, err := New(Config{Store: &Store{DB: s}, Querier: s, Rules: []Rule{execRule(t)}, Recorder: rec, Deliverer: rcv, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	rule := execRule(t)
	if err := sc.RunRule(ctx, rule); !errors.Is(err, ErrNotRecorded) {
		t.Fatalf("run with the audit record refusing: %v, want ErrNotRecorded", err)
	}
	if fs, _, _ := (&Store{DB: s}).List(ctx, ListRequest{}); len(fs) != 0 {
		t.Fatalf("a finding was stored without its audit event: %+v", fs[0])
	}
	rec.fail = false
	if err := sc.RunRule(ctx, rule); err != nil {
		t.Fatal(err)
	}
	if err := sc.DeliverOnce(ctx); err != nil {
		t.Fatal(err)
	}
	clk.add(11 * time.Minute)
	if err := sc.RunRule(ctx, rule); err != nil {
		t.Fatal(err)
	}
	resolvedAt := clk.now()
	if err := sc.DeliverOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rcv.kinds(); !slices.Equal(got, []string{"new:mallory", "resolve:mallory"}) {
		t.Fatalf("delivered %v, want new then resolve", got)
	}
	if end := rcv.got[1].EndsAt; !end.Equal(resolvedAt) {
		t.Errorf("resolve EndsAt %s, want the resolution time %s", end, resolvedAt)
	}

	// One that fires and resolves while the receiver is down still gets its alert, then its end.
	execs(t, s, "oscar", "kube-system", clk.now().Add(-10*time.Second), 1)
	if err := sc.RunRule(ctx, rule); err != nil {
		t.Fatal(err)
	}
	rcv.down = true
	if err := sc.DeliverOnce(ctx); err == nil {
		t.Fatal("delivery to a receiver that is down reported success")
	}
	clk.add(11 * time.Minute)
	if err := sc.RunRule(ctx, rule); err != nil {
		t.Fatal(err)
	}
	rcv.down = false
	for range 3 {
		if err := sc.DeliverOnce(ctx); err != nil {
			t.Fatal(err)
		}
		clk.add(61 * time.Second)
	}
	if got := rcv.kinds(); !slices.Equal(got[2:], []string{"new:oscar", "resolve:oscar"}) {
		t.Fatalf("delivered %v, want oscar's alert and then its end", got)
	}
}

func TestListFilterAndPages(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	store := &Store{DB: s}
	base := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	var fs []*Finding
	for i := range 7 {
		st := Firing
		if i%2 == 1 {
			st = Resolved
		}
		fs = append(fs, &Finding{
			Fingerprint: fmt.Sprintf("fp%02d", i), Detection: "auth-failure-burst", Cluster: "prod",
			Subject: fmt.Sprintf("user%d", i), Severity: "medium", State: st, Count: uint64(i),
			FirstSeen: base, LastSeen: base, CreatedAt: base.Add(time.Duration(i) * time.Minute), UpdatedAt: base, Version: 1,
		})
	}
	if err := store.Put(ctx, fs...); err != nil {
		t.Fatal(err)
	}
	// A newer version replaces the older one.
	g := *fs[0]
	g.State, g.Version, g.Summary = Acknowledged, 2, "it's \\ 'quoted'\n"
	if err := store.Put(ctx, &g); err != nil {
		t.Fatal(err)
	}
	got, err := store.Get(ctx, "fp00")
	if err != nil || got.State != Acknowledged || got.Summary != g.Summary {
		t.Fatalf("Get after a new version: %+v, %v", got, err)
	}
	var seen []string
	tok := ""
	for page := 0; ; page++ {
		p, next, err := store.List(ctx, ListRequest{Filter: `count >= 1 AND subject = "user*"`, PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range p {
			seen = append(seen, f.Fingerprint)
		}
		if next == "" {
			break
		}
		tok = next
		if page > 5 {
			t.Fatal("pages do not end")
		}
	}
	if want := []string{"fp06", "fp05", "fp04", "fp03", "fp02", "fp01"}; !slices.Equal(seen, want) {
		t.Errorf("pages %v, want %v", seen, want)
	}
	firing, _, err := store.List(ctx, ListRequest{State: Firing})
	if err != nil || len(firing) != 3 {
		t.Errorf("firing: %d, %v; want 3 (fp00 is acknowledged now)", len(firing), err)
	}
	if _, _, err := store.List(ctx, ListRequest{Filter: `nope = "x"`}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown field: %v, want ErrInvalid", err)
	}
	if _, _, err := store.List(ctx, ListRequest{Filter: `count >= 1`, PageToken: tok}); !errors.Is(err, ErrInvalid) {
		t.Errorf("token of another filter: %v, want ErrInvalid", err)
	}
}

func TestFingerprintIsStablePerWindowBucket(t *testing.T) {
	t.Parallel()
	w := 10 * time.Minute
	at := time.Date(2026, 12, 2, 10, 3, 0, 0, time.UTC)
	a := Fingerprint("d", "c", "alice", "ns", at, w)
	if b := Fingerprint("d", "c", "alice", "ns", at.Add(5*time.Minute), w); b != a {
		t.Errorf("same bucket, different fingerprints")
	}
	for _, other := range []string{
		Fingerprint("d", "c", "alice", "ns", at.Add(8*time.Minute), w),
		Fingerprint("d", "c", "alice", "ns2", at, w),
		Fingerprint("d", "c", "alic", "ens", at, w),
		Fingerprint("e", "c", "alice", "ns", at, w),
	} {
		if other == a {
			t.Errorf("different finding, same fingerprint %s", a)
		}
	}
}

func TestSuppressionMatches(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	f := &Finding{Detection: "exec-protected-namespace", Subject: "ci-runner", Scope: "kube-system"}
	tests := []struct {
		name string
		s    Suppression
		want bool
	}{
		{"subject glob", Suppression{Subject: "ci-*"}, true},
		{"other subject", Suppression{Subject: "dave"}, false},
		{"namespace", Suppression{Namespace: "kube-*"}, true},
		{"other detection", Suppression{Subject: "ci-*", Detection: "mass-delete"}, false},
		{"expired", Suppression{Subject: "ci-*", Expires: now}, false},
		{"not yet expired", Suppression{Subject: "ci-*", Expires: now.Add(time.Second)}, true},
		{"names nothing", Suppression{Detection: "exec-protected-namespace"}, false},
		{"subject and namespace", Suppression{Subject: "ci-*", Namespace: "default"}, false},
	}
	for _, tt := range tests {
		if got := tt.s.matches(f, now); got != tt.want {
			t.Errorf("%s: matches = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func find(fs []*Finding, subject string) *Finding {
	for _, f := range fs {
		if f.Subject == subject {
			return f
		}
	}
	return &Finding{}
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}
