package apiserver

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/audit/query"
)

// TestAuditServiceFilterInjection sends hostile filters to SearchEvents through gRPC, against
// the real embedded store, as a user limited to their own events and as an auditor. Each is
// InvalidArgument naming the filter's problem, or an answer: never a store error, never the
// SQL or ClickHouse's words in a message, never an event beyond the caller's scope.
func TestAuditServiceFilterInjection(t *testing.T) {
	as := startAuditServer(t)
	c := kaccessv1.NewAuditServiceClient(as.grpcConn(t))
	alice, sec := withToken(context.Background(), as.tokens["alice"]), withToken(context.Background(), as.tokens["sec"])
	bob := as.count(func(e *event.Event) bool { return e.User == "bob" })
	const any = -1
	tests := []struct {
		name, filter string
		invalid      bool
		auditorRows  int // rows the auditor gets, or any
	}{
		{"close and OR 1=1", `user = "x") OR 1=1 --`, true, 0},
		{"OR 1=1", `user = "bob" OR 1=1`, true, 0},
		{"single quotes", `user = 'bob' OR ''=''`, true, 0},
		{"SQL quote in a string", `user = "bob' OR '1'='1"`, false, 0},
		{"escaped double quote in a string", `user = "bob\" OR user = \"alice"`, false, 0},
		{"backslash before the closing quote", `user = "bob\\" OR user = "bob"`, false, bob},
		{"unbalanced quote", `user = "bob`, true, 0},
		{"trailing backslash", `user = "bob\`, true, 0},
		{"lone backslash", `\`, true, 0},
		{"SQL comment", `user = "bob" -- AND user = "alice"`, true, 0},
		{"statement after", `user = "bob"; DROP TABLE audit_events`, true, 0},
		{"drop in a string", `name = "x'); DROP TABLE audit_events; --"`, false, 0},
		{"placeholder syntax in a string", `user = "{f0:String}"`, false, 0},
		{"backquoted identifier", "`user` = \"bob\"", true, 0},
		{"SQL function as a field", `lower(user) = "bob"`, true, 0},
		{"SQL in a field name", `user OR 1 = "x"`, true, 0},
		{"unknown field", `password = "x"`, true, 0},
		{"NUL in a string", "user = \"bob\x00\"", false, 0},
		{"time with SQL", `time > "2026-11-24T10:00:00Z' OR 1=1 --"`, true, 0},
		{"number out of range", `response_code > 99999999999999999999999`, true, 0},
		{"huge filter", `user = "` + strings.Repeat("a", query.MaxFilterBytes) + `"`, true, 0},
		{"too many operators", strings.Repeat(`user = "bob" OR `, query.MaxOperators) + `user = "bob"`, true, 0},
		{"deep parentheses", strings.Repeat("(", 1000) + `user = "bob"` + strings.Repeat(")", 1000), false, bob},
		{"too deep unbalanced", strings.Repeat("(", 2000) + `user = "bob"`, true, 0},
		{"everything but alice", `NOT user = "alice"`, false, bob},
		{"wildcard presence", `user:*`, false, len(as.events)},
	}
	sqlWords := []string{"DB::Exception", "Code:", "SELECT", "WHERE", "ClickHouse", "chdb", "{f", "Syntax error"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := func() *kaccessv1.SearchEventsRequest {
				return &kaccessv1.SearchEventsRequest{StartTime: timestamppb.New(auditStart), EndTime: timestamppb.New(auditStart.Add(time.Hour)),
					Filter: tt.filter, PageSize: 1000}
			}
			for _, who := range []struct {
				name string
				ctx  context.Context
			}{{"alice", alice}, {"sec", sec}} {
				resp, err := c.SearchEvents(who.ctx, req())
				if tt.invalid {
					if status.Code(err) != codes.InvalidArgument {
						t.Fatalf("%s: %v, want InvalidArgument", who.name, err)
					}
					msg := status.Convert(err).Message()
					if !strings.HasPrefix(msg, "filter ") || len(msg) > 2*query.MaxFilterBytes+512 {
						t.Errorf("%s: message %.200q does not say what is wrong with the filter", who.name, msg)
					}
					for _, w := range sqlWords {
						if strings.Contains(msg, w) && !strings.Contains(tt.filter, w) {
							t.Errorf("%s: message %q leaks %q", who.name, msg, w)
						}
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v, want an answer", who.name, err)
				}
				for _, e := range resp.GetEvents() {
					if who.name == "alice" && e.GetUser() != "alice" {
						t.Fatalf("alice sees an event of %s", e.GetUser())
					}
				}
				if who.name == "sec" && tt.auditorRows != any && len(resp.GetEvents()) != tt.auditorRows {
					t.Errorf("auditor gets %d events, want %d", len(resp.GetEvents()), tt.auditorRows)
				}
			}
		})
	}
	// Invalid UTF-8 cannot go through gRPC (the client refuses to marshal it); REST takes it.
	req, _ := http.NewRequest("GET", as.url("/v1/auditevents?filter="+url.QueryEscape("user = \"bob\xff\"")), nil)
	req.Header.Set("Authorization", "Bearer "+as.tokens["alice"])
	resp, err := as.httpClient(t, false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "query parameter filter is not valid UTF-8") {
		t.Errorf("REST invalid UTF-8 filter: %d %s", resp.StatusCode, body)
	}
	// The store is intact after all of it.
	if got := len(searchAll(t, c, sec, &kaccessv1.SearchEventsRequest{StartTime: timestamppb.New(auditStart), EndTime: timestamppb.New(auditStart.Add(time.Hour)), PageSize: 1000})); got != len(as.events) {
		t.Errorf("after the injections the auditor sees %d events, want %d", got, len(as.events))
	}
}
