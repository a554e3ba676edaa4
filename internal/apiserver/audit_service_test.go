package apiserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/query"
	"github.com/kaccess/kaccess/internal/audit/storetest"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/session"
	"github.com/kaccess/kaccess/internal/testenv"
	"github.com/kaccess/kaccess/internal/tlsutil"
)

// TestMain lets testenv remove the chDB helper it builds for the audit tests.
func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// memRecorder keeps what was recorded.
type memRecorder struct {
	mu     sync.Mutex
	events []*event.Event
}

func (r *memRecorder) Record(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

func (r *memRecorder) queries() []*event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*event.Event
	for _, e := range r.events {
		if e.Kind == event.KindAuditQuery {
			out = append(out, e)
		}
	}
	return out
}

var auditStart = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

type auditServer struct {
	*testServer
	rec    *memRecorder
	events []*event.Event
	tokens map[string]string // user -> bearer token
}

// startAuditServer serves AuditService over a chDB store holding 300 events of alice and bob;
// "sec" is in the auditor group corp:security, alice and bob are not.
func startAuditServer(t *testing.T) *auditServer {
	t.Helper()
	lib, helper := testenv.ChDB(t)
	ctx := context.Background()
	store, err := chdb.Open(ctx, chdb.Config{Dir: t.TempDir(), Library: lib, Helper: helper})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	events := storetest.Realistic("gw-api", 1, 300, auditStart)
	for i, e := range events {
		e.User = []string{"alice", "bob"}[i%2]
		e.Name = "web-" + e.Name
	}
	// One with recorded bodies, which only the Kubernetes export format carries.
	events[0].Level = event.LevelRequestResponse
	events[0].RequestBody = json.RawMessage(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"web-0"},"data":{"k":"v"}}`)
	events[0].ResponseBody = json.RawMessage(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"web-0","uid":"u0"}}`)
	if err := store.Write(ctx, "api-test", events); err != nil {
		t.Fatal(err)
	}

	certFile, keyFile, caPEM, err := tlsutil.EnsureSelfSigned(t.TempDir(), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	mgr, err := session.NewManager(session.Config{Issuer: "kaccess-test", KeysDir: t.TempDir(), TTL: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	rec := &memRecorder{}
	srv, err := New(Config{
		Sessions: mgr, Authenticator: authn.Union{authn.Sessions{Verifier: mgr}}, Logger: log,
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Audit: rec,
		AuditQuery: &query.Engine{Querier: store, TailInterval: 50 * time.Millisecond}, AuditorGroups: []string{"corp:security"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Close)
	tokens := map[string]string{}
	for user, groups := range map[string][]string{"alice": {"corp:devs"}, "bob": {"corp:devs"}, "sec": {"corp:security"}} {
		tok, _, err := mgr.Mint(ctx, session.Claims{User: user, Groups: groups, Source: "test"})
		if err != nil {
			t.Fatal(err)
		}
		tokens[user] = tok
	}
	return &auditServer{
		testServer: &testServer{addr: ln.Addr().String(), tls: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, logs: logs, sessions: mgr},
		rec:        rec, events: events, tokens: tokens,
	}
}

func (as *auditServer) count(pred func(*event.Event) bool) int {
	n := 0
	for _, e := range as.events {
		if pred(e) {
			n++
		}
	}
	return n
}

func searchAll(t *testing.T, c kaccessv1.AuditServiceClient, ctx context.Context, req *kaccessv1.SearchEventsRequest) []*kaccessv1.AuditEvent {
	t.Helper()
	var out []*kaccessv1.AuditEvent
	for {
		resp, err := c.SearchEvents(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.GetEvents()...)
		if resp.GetNextPageToken() == "" {
			return out
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func TestAuditServiceScopesByRole(t *testing.T) {
	as := startAuditServer(t)
	c := kaccessv1.NewAuditServiceClient(as.grpcConn(t))
	rng := func(filter string) *kaccessv1.SearchEventsRequest {
		return &kaccessv1.SearchEventsRequest{StartTime: timestamppb.New(auditStart), EndTime: timestamppb.New(auditStart.Add(time.Hour)), Filter: filter, PageSize: 70}
	}
	sec, alice := withToken(context.Background(), as.tokens["sec"]), withToken(context.Background(), as.tokens["alice"])

	if got, want := len(searchAll(t, c, sec, rng(""))), len(as.events); got != want {
		t.Errorf("auditor sees %d events, want all %d", got, want)
	}
	if got, want := len(searchAll(t, c, sec, rng(`user = "bob"`))), as.count(func(e *event.Event) bool { return e.User == "bob" }); got != want || want == 0 {
		t.Errorf("auditor filtering on bob sees %d, want %d", got, want)
	}
	mine := searchAll(t, c, alice, rng(""))
	if want := as.count(func(e *event.Event) bool { return e.User == "alice" }); len(mine) != want {
		t.Errorf("alice sees %d events, want her %d", len(mine), want)
	}
	for _, e := range mine {
		if e.GetUser() != "alice" {
			t.Fatalf("alice sees an event of %s", e.GetUser())
		}
	}
	for _, f := range []string{`user = "bob"`, `user = "bob" OR user = "alice" OR NOT user = "x"`, `user:*`} {
		for _, e := range searchAll(t, c, alice, rng(f)) {
			if e.GetUser() != "alice" {
				t.Fatalf("alice with filter %s sees an event of %s", f, e.GetUser())
			}
		}
	}
	counts, err := c.AggregateEvents(alice, &kaccessv1.AggregateEventsRequest{
		StartTime: timestamppb.New(auditStart), EndTime: timestamppb.New(auditStart.Add(time.Hour)), GroupBy: []string{"user"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, cnt := range counts.GetCounts() {
		if cnt.GetGroup()["user"] != "alice" {
			t.Errorf("alice's aggregate counts %v", cnt.GetGroup())
		}
	}
	if _, err := c.RunDetections(alice, &kaccessv1.RunDetectionsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("alice running detections: %v, want PermissionDenied", err)
	}

	// Every query is on the record, with who asked, the filter and the row count.
	var sawAliceBob bool
	for _, e := range as.rec.queries() {
		if e.User == "alice" && e.Extra["filter"] == `user = "bob"` && e.Extra["scope"] == "own" && e.Extra["rpc"] == "SearchEvents" {
			sawAliceBob = e.Extra["rows"] == "0"
		}
	}
	if !sawAliceBob {
		t.Errorf("alice's search for bob is not on the record with 0 rows: %d query events", len(as.rec.queries()))
	}
}

func TestAuditServiceBadFilter(t *testing.T) {
	as := startAuditServer(t)
	c := kaccessv1.NewAuditServiceClient(as.grpcConn(t))
	_, err := c.SearchEvents(withToken(context.Background(), as.tokens["sec"]), &kaccessv1.SearchEventsRequest{Filter: `user = "a" AND verb = 5`})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "1:23") {
		t.Errorf("bad filter: %v, want InvalidArgument at 1:23", err)
	}
	if q := as.rec.queries(); len(q) != 1 || q[0].ResponseCode != 400 || q[0].Extra["filter"] != `user = "a" AND verb = 5` {
		t.Errorf("the refused search is not on the record: %+v", q)
	}
	req, _ := http.NewRequest("GET", as.url("/v1/auditevents?filter="+url.QueryEscape(`usr = "a"`)), nil)
	req.Header.Set("Authorization", "Bearer "+as.tokens["sec"])
	resp, err := as.httpClient(t, false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `unknown field`) {
		t.Errorf("REST bad filter: %d %s", resp.StatusCode, body)
	}
}

func (as *auditServer) export(t *testing.T, user, format, filter string) (string, string) {
	t.Helper()
	q := url.Values{
		"startTime": {auditStart.Format(time.RFC3339)}, "endTime": {auditStart.Add(time.Hour).Format(time.RFC3339)},
		"format": {format}, "filter": {filter},
	}
	req, _ := http.NewRequest("GET", as.url("/v1/auditevents:export?"+q.Encode()), nil)
	req.Header.Set("Authorization", "Bearer "+as.tokens[user])
	resp, err := as.httpClient(t, false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("export: %d %s", resp.StatusCode, body)
	}
	return resp.Header.Get("Content-Type"), string(body)
}

func TestAuditServiceRESTExport(t *testing.T) {
	as := startAuditServer(t)
	// JSON lines, every event of the range for an auditor.
	ct, body := as.export(t, "sec", "EXPORT_FORMAT_JSONL", `name = "web-*"`)
	if !strings.HasPrefix(ct, "application/x-ndjson") {
		t.Errorf("JSONL content type %q", ct)
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	var prev time.Time
	for sc.Scan() {
		var e struct {
			EventID string `json:"eventId"`
			User    string `json:"user"`
			Time    string `json:"time"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.EventID == "" {
			t.Fatalf("line %d: %q: %v", n+1, sc.Text(), err)
		}
		at, err := time.Parse(time.RFC3339Nano, e.Time)
		if err != nil || at.Before(prev) {
			t.Fatalf("line %d: time %q out of order (%v)", n+1, e.Time, err)
		}
		prev = at
		n++
	}
	if n != len(as.events) {
		t.Errorf("JSONL export has %d lines, want %d", n, len(as.events))
	}

	// CSV for alice: a header, then her events only.
	ct, body = as.export(t, "alice", "EXPORT_FORMAT_CSV", "")
	if !strings.HasPrefix(ct, "text/csv") {
		t.Errorf("CSV content type %q", ct)
	}
	records, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(records) == 0 || records[0][0] != "time" || records[0][5] != "user" {
		t.Fatalf("CSV header %v", records[:min(1, len(records))])
	}
	if want := as.count(func(e *event.Event) bool { return e.User == "alice" }); len(records)-1 != want {
		t.Errorf("alice's CSV export has %d rows, want %d", len(records)-1, want)
	}
	for _, r := range records[1:] {
		if r[5] != "alice" {
			t.Fatalf("alice's export holds a row of %s", r[5])
		}
	}
}

// The Kubernetes format: one audit.k8s.io/v1 Event per line, joined to the record by the
// request id (auditID) and carrying the recorded bodies.
func TestAuditServiceRESTExportK8s(t *testing.T) {
	as := startAuditServer(t)
	ct, body := as.export(t, "sec", "EXPORT_FORMAT_K8S", `name = "web-*"`)
	if !strings.HasPrefix(ct, "application/x-ndjson") {
		t.Errorf("k8s content type %q", ct)
	}
	byRequest := map[string]*event.Event{}
	for _, e := range as.events {
		byRequest[e.RequestID] = e
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		n++
		var ev auditv1.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %d: %q: %v", n, sc.Text(), err)
		}
		e, ok := byRequest[string(ev.AuditID)]
		if ev.Kind != "Event" || ev.APIVersion != "audit.k8s.io/v1" || !ok {
			t.Fatalf("line %d: kind %q apiVersion %q auditID %q (not a request id of the data)", n, ev.Kind, ev.APIVersion, ev.AuditID)
		}
		if ev.User.Username != e.User || ev.Verb != e.Verb || ev.ResponseStatus == nil || int(ev.ResponseStatus.Code) != e.ResponseCode ||
			!ev.RequestReceivedTimestamp.Time.Equal(e.Time) {
			t.Errorf("line %d: %s %s %+v at %s, want %s %s %d at %s", n, ev.User.Username, ev.Verb, ev.ResponseStatus,
				ev.RequestReceivedTimestamp, e.User, e.Verb, e.ResponseCode, e.Time)
		}
		if e == as.events[0] && (ev.RequestObject == nil || ev.ResponseObject == nil || !strings.Contains(string(ev.ResponseObject.Raw), `"u0"`)) {
			t.Errorf("line %d: the recorded bodies are missing: %s", n, sc.Text())
		}
	}
	if n != len(as.events) {
		t.Errorf("k8s export has %d lines, want %d", n, len(as.events))
	}
}

func TestAuditServiceTail(t *testing.T) {
	as := startAuditServer(t)
	c := kaccessv1.NewAuditServiceClient(as.grpcConn(t))
	ctx, cancel := context.WithTimeout(withToken(context.Background(), as.tokens["alice"]), 20*time.Second)
	defer cancel()
	// From the start of the data: a tail that starts in the past replays, then follows.
	stream, err := c.TailEvents(ctx, &kaccessv1.TailEventsRequest{StartTime: timestamppb.New(auditStart)})
	if err != nil {
		t.Fatal(err)
	}
	want := as.count(func(e *event.Event) bool { return e.User == "alice" })
	for i := 0; i < want; i++ {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d events: %v", i, err)
		}
		if resp.GetEvent().GetUser() != "alice" {
			t.Fatalf("alice's tail sent an event of %s", resp.GetEvent().GetUser())
		}
	}
}

// fakeDetector has one detection, "secret-first-access", finding one thing.
type fakeDetector struct{ ran []string }

func (f *fakeDetector) Detections() []DetectionInfo {
	return []DetectionInfo{{Name: "secret-first-access", Title: "First read of a secret", Severity: "medium", TechniqueID: "T1552.007"}}
}

func (f *fakeDetector) RunDetection(_ context.Context, name string, from, to time.Time) ([]Finding, error) {
	if name != "secret-first-access" {
		return nil, ErrUnknownDetection
	}
	f.ran = append(f.ran, name)
	return []Finding{{Detection: name, Severity: "medium", Subject: "bob", Summary: "bob read secret db for the first time",
		FirstSeen: from.Add(time.Minute), LastSeen: from.Add(time.Minute), Count: 1, EventIDs: []string{"e1"}}}, nil
}

func TestAuditServiceDetections(t *testing.T) {
	t.Parallel()
	det, rec := &fakeDetector{}, &memRecorder{}
	a := &auditService{detector: det, auditors: []string{"corp:security"}, audit: rec, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	sec := authn.WithIdentity(context.Background(), &authn.Identity{User: "sec", Groups: []string{"corp:security"}})
	alice := authn.WithIdentity(context.Background(), &authn.Identity{User: "alice", Groups: []string{"corp:devs"}})

	list, err := a.ListDetections(alice, &kaccessv1.ListDetectionsRequest{})
	if err != nil || len(list.GetDetections()) != 1 || list.GetDetections()[0].GetMitreTechnique() != "T1552.007" {
		t.Errorf("list: %v %v", list, err)
	}
	if _, err := a.RunDetections(alice, &kaccessv1.RunDetectionsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("alice: %v, want PermissionDenied", err)
	}
	resp, err := a.RunDetections(sec, &kaccessv1.RunDetectionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if f := resp.GetFindings(); len(f) != 1 || f[0].GetEvidenceEventIds()[0] != "e1" || f[0].GetSubject() != "bob" {
		t.Errorf("findings %v", f)
	}
	if _, err := a.RunDetections(sec, &kaccessv1.RunDetectionsRequest{Names: []string{"nope"}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("unknown detection: %v, want InvalidArgument", err)
	}
	// alice's refused run, sec's run, sec's unknown detection (a store-side error, not recorded).
	q := rec.queries()
	if len(q) != 2 || q[0].User != "alice" || q[0].ResponseCode != 403 || q[0].Decision != event.DecisionRefused || q[0].RefusalReason != "not_an_auditor" {
		t.Fatalf("recorded %d queries, want alice's refusal first: %+v", len(q), q)
	}
	if q[1].User != "sec" || q[1].Extra["detections"] != "secret-first-access" || q[1].Extra["rows"] != "1" {
		t.Errorf("sec's run recorded as %+v", q[1])
	}
}

// failingRecorder cannot record.
type failingRecorder struct{}

func (failingRecorder) Record(*event.Event) error { return io.ErrClosedPipe }

// fakeSearcher returns one event of alice and remembers the requests.
type fakeSearcher struct{ reqs []query.Request }

func (f *fakeSearcher) Search(_ context.Context, req query.Request) ([]*event.Event, string, error) {
	f.reqs = append(f.reqs, req)
	return []*event.Event{{User: "alice", EventID: "e1", Time: auditStart}}, "", nil
}

func (f *fakeSearcher) Export(context.Context, query.Request, func(*event.Event) error) (int64, error) {
	return 0, nil
}

func (f *fakeSearcher) Tail(context.Context, query.Request, func(*event.Event) error) error {
	return nil
}

func (f *fakeSearcher) Aggregate(context.Context, query.AggregateRequest) ([]query.Count, error) {
	return nil, nil
}

// A query that cannot be put on the record is not answered.
func TestAuditServiceUnrecordedQueryRefused(t *testing.T) {
	t.Parallel()
	f := &fakeSearcher{}
	a := &auditService{events: f, audit: failingRecorder{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	alice := authn.WithIdentity(context.Background(), &authn.Identity{User: "alice", Groups: []string{"corp:devs"}})
	resp, err := a.SearchEvents(alice, &kaccessv1.SearchEventsRequest{Filter: `verb = "get"`})
	if status.Code(err) != codes.Unavailable || resp != nil {
		t.Errorf("search with a failing recorder: %v %v, want Unavailable and nothing", resp, err)
	}
	if len(f.reqs) != 1 || f.reqs[0].OnlyUser != "alice" || f.reqs[0].Filter != `verb = "get"` {
		t.Errorf("requests %+v: want alice's own, her filter unchanged", f.reqs)
	}
	if _, err := a.SearchEvents(context.Background(), &kaccessv1.SearchEventsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no identity: %v", err)
	}
}

// Over REST a tail is newline-delimited JSON, one {"result": {"event": ...}} per line.
func TestAuditServiceRESTTail(t *testing.T) {
	as := startAuditServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := url.Values{"startTime": {auditStart.Format(time.RFC3339)}, "filter": {`user = "bob"`}}
	req, _ := http.NewRequestWithContext(ctx, "GET", as.url("/v1/auditevents:tail?"+q.Encode()), nil)
	req.Header.Set("Authorization", "Bearer "+as.tokens["sec"])
	client := as.httpClient(t, false)
	client.Timeout = 0
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	want := as.count(func(e *event.Event) bool { return e.User == "bob" })
	for i := 0; i < want; i++ {
		if !sc.Scan() {
			t.Fatalf("after %d lines: %v", i, sc.Err())
		}
		var line struct {
			Result struct {
				Event struct{ User string } `json:"event"`
			} `json:"result"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line.Result.Event.User != "bob" {
			t.Fatalf("line %d: %s (%v)", i+1, sc.Text(), err)
		}
	}
}
