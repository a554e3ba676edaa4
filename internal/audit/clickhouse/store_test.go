package clickhouse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/storetest"
)

// TestWriteManyBatches writes 25,000 events in batches and reads back exactly those ids,
// once each, in Seq order.
func TestWriteManyBatches(t *testing.T) {
	s := mustOpen(t, newOldTable(t))
	ctx := context.Background()
	const total, batch = 25000, 5000
	evs := events("gw-many", 1, total)
	for i := 0; i < total; i += batch {
		if err := s.Write(ctx, fmt.Sprint("tok-many-", i), evs[i:i+batch]); err != nil {
			t.Fatalf("batch at %d: %v", i, err)
		}
	}
	got, err := s.Events(ctx, "gw-many")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != total {
		t.Fatalf("read back %d events, wrote %d", len(got), total)
	}
	if !slices.Equal(ids(got), ids(evs)) {
		t.Fatal("the ids read back (in seq order) differ from those written")
	}
}

// TestFieldsRoundTrip writes one event with every field set and reads back the same, as far
// as the old types allow: the 18.16 table's DateTime keeps whole seconds.
func TestFieldsRoundTrip(t *testing.T) {
	s := mustOpen(t, newOldTable(t))
	ctx := context.Background()
	e := &event.Event{
		Time: time.Date(2026, 11, 25, 14, 1, 2, 345678000, time.UTC), EventID: event.NewID(),
		Kind: event.KindGrant, Stage: event.StageEnded,
		Cluster: "c1", GatewayInstance: "gw-fields", RequestID: "r1", Seq: 42,
		User: "alice", UID: "u-1", Groups: []string{"g1", "g2"}, Source: "ldap:corp",
		SessionIDHash: event.HashSessionID("sess"), ImpersonatedUser: "bob",
		ImpersonatedGroups: []string{"ig"}, GrantIDs: []string{"gr-1", "gr-2"},
		SourceIP: "2001:db8::1", UserAgent: "ua", Verb: "create", APIGroup: "rbac.authorization.k8s.io",
		APIVersion: "v1", Resource: "rolebindings", Subresource: "status", Namespace: "ns", Name: "rb",
		RequestURI: "/apis/x?y=z", Method: "POST", ResponseCode: 403, Decision: event.DecisionDeny,
		Latency: 1500 * time.Microsecond, Duration: 3 * time.Second, BytesIn: 123, BytesOut: 456,
		Level: event.LevelRequestResponse, RequestBody: json.RawMessage(`{"a":1}`),
		ResponseBody: json.RawMessage(`{"b":"ü"}`), Extra: map[string]string{"approver": "carol", "grant_id": "gr-1"},
	}
	if err := s.Write(ctx, "tok-fields", []*event.Event{e}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Events(ctx, "gw-fields")
	if err != nil {
		t.Fatal(err)
	}
	want := *e
	want.Time = e.Time.Truncate(time.Second) // DateTime, not DateTime64
	if len(got) != 1 || !reflect.DeepEqual(*got[0], want) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, want)
	}
}

// TestCompression writes with each compression method.
func TestCompression(t *testing.T) {
	cfg := newOldTable(t)
	if opts, _ := cfg.withDefaults().options(); opts.Compression == nil || opts.Compression.Method.String() != "lz4" {
		t.Fatalf("default compression is %v, want lz4", opts.Compression)
	}
	ctx := context.Background()
	for _, method := range []string{"lz4", "zstd", "none"} {
		cfg.Compression = method
		s := mustOpen(t, cfg)
		if err := s.Write(ctx, "tok", events("gw-"+method, 1, 2000)); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if got, err := s.Events(ctx, "gw-"+method); err != nil || len(got) != 2000 {
			t.Fatalf("%s: read back %d events, err %v; want 2000", method, len(got), err)
		}
	}
}

// TestOpenRefusesTables checks the errors of Open for a missing table and one with a column
// no event field fills.
func TestOpenRefusesTables(t *testing.T) {
	cfg := newOldTable(t)
	ctx := context.Background()
	missing := cfg
	missing.Table = "no_such_table"
	if _, err := Open(ctx, missing); err == nil || !strings.Contains(err.Error(), "too old for the production schema") {
		t.Errorf("Open of a missing table on 18.16: %v; want advice to create it", err)
	}
	// A database that does not exist yet is no reason to refuse the connection (the
	// migration creates it on modern servers); here the table is what is missing.
	noDB := cfg
	noDB.Database = "no_such_database"
	if _, err := Open(ctx, noDB); err == nil || !strings.Contains(err.Error(), "describe `no_such_database`") {
		t.Errorf("Open with a missing database: %v; want the describe of its table to fail", err)
	}
	admin := mustOpenConn(t, cfg)
	if err := admin.Exec(ctx, "ALTER TABLE "+cfg.Table+" ADD COLUMN mystery String"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "column mystery: not in the audit schema") {
		t.Errorf("Open of a table with an unknown column: %v", err)
	}
	if err := admin.Exec(ctx, "ALTER TABLE "+cfg.Table+" MODIFY COLUMN mystery String MATERIALIZED user"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, cfg); err != nil {
		t.Errorf("a MATERIALIZED column must be left to the server: %v", err)
	}
	if s, err := Open(ctx, cfg); err == nil {
		defer s.Close()
		if s.DedupToken() || s.ServerVersion() != "18.16" {
			t.Errorf("server %s, dedup token %v; want 18.16 without the token", s.ServerVersion(), s.DedupToken())
		}
	}
}

// TestVariedRoundTrip writes the conformance suite's edge-case events into the 18.16 table:
// every field comes back as written, times at the DateTime's whole seconds. Times DateTime
// cannot hold (after 2106) are refused, not wrapped around.
func TestVariedRoundTrip(t *testing.T) {
	s := mustOpen(t, newOldTable(t))
	ctx := context.Background()
	var in, tooLate []*event.Event
	for _, e := range storetest.Varied("gw-varied", 1) {
		if e.Time.Year() > 2105 {
			tooLate = append(tooLate, e)
			continue
		}
		in = append(in, e)
	}
	if len(tooLate) > 0 {
		err := s.Write(ctx, "tok-late", tooLate)
		if err == nil || !strings.Contains(err.Error(), "outside the DateTime range") || !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("Write of a time after 2106 into DateTime: %v; want it refused", err)
		}
	}
	if err := s.Write(ctx, "tok-varied", in); err != nil {
		t.Fatal(err)
	}
	got, err := s.Events(ctx, "gw-varied")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("read back %d events, wrote %d", len(got), len(in))
	}
	for i := range in {
		want := storetest.Normalize(in[i])
		want.Time = want.Time.Truncate(time.Second) // DateTime, not DateTime64
		for _, d := range storetest.Diff(storetest.Normalize(got[i]), want) {
			t.Errorf("event %d (seq %d): %s", i, want.Seq, d)
		}
	}
}

// TestWrongPassword checks that a refused login says so, without the password.
func TestWrongPassword(t *testing.T) {
	cfg := newOldTable(t)
	cfg.Password = "not-the-password-x9"
	_, err := Open(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "check the addresses, credentials") {
		t.Fatalf("Open with a wrong password: %v; want a refusal that names the credentials", err)
	}
	if strings.Contains(err.Error(), cfg.Password) {
		t.Fatalf("the password appears in the error: %v", err)
	}
	t.Log(err)
}

func TestStoredSeqs(t *testing.T) {
	s := mustOpen(t, newOldTable(t))
	ctx := context.Background()
	if err := s.Write(ctx, "tok-seqs", events("gw-seqs", 10, 5)); err != nil {
		t.Fatal(err)
	}
	got, err := s.StoredSeqs(ctx, "gw-seqs", 12, 100)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{12, 13, 14}) {
		t.Fatalf("StoredSeqs(12..100) = %v, want [12 13 14]", got)
	}
	if got, _ := s.StoredSeqs(ctx, "other-gw", 1, 100); len(got) != 0 {
		t.Fatalf("another gateway's seqs: %v", got)
	}
}
