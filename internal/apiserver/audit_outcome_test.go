package apiserver

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	"google.golang.org/grpc/metadata"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	"github.com/kaccess/kaccess/internal/audit/event"
)

// Login, failed login and logout events carry the status the caller was answered (the REST
// one, also for gRPC calls) and a decision that goes with it.
func TestLoginEventsRecordWhatTheCallerWasAnswered(t *testing.T) {
	rec := &memRecorder{}
	ts := startServerRecording(t, rec)
	auth := kaccessv1.NewAuthServiceClient(ts.grpcConn(t))
	ctx := context.Background()
	logins := []struct{ source, user, password string }{
		{"corp", "alice", alicePassword},
		{"corp", "alice", "wrong"},
		{"corp", "dave", "pw-dave"},
		{"corp", "lou", "pw-lou"},
		{"busy", "alice", "x"},
		{"down", "alice", "x"},
	}
	var token string
	for _, l := range logins {
		resp, err := auth.Login(ctx, &kaccessv1.LoginRequest{Source: l.source, Username: l.user, Password: l.password})
		if err == nil {
			token = resp.GetToken()
		}
	}
	if _, err := auth.Logout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), &kaccessv1.LogoutRequest{}); err != nil {
		t.Fatal(err)
	}
	// The same wrong password over REST: the code recorded is the one REST answers.
	resp, err := ts.httpClient(t, false).Post(ts.url("/v1/auth:login"), "application/json",
		bytes.NewReader([]byte(`{"source":"corp","username":"alice","password":"wrong"}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	want := []struct {
		kind     event.Kind
		code     int
		decision event.Decision
		reason   string
	}{
		{event.KindLogin, 200, event.DecisionAllow, ""},
		{event.KindLoginFailed, 401, event.DecisionRefused, "invalid_credentials"},
		{event.KindLoginFailed, 403, event.DecisionRefused, "account_disabled"},
		{event.KindLoginFailed, 403, event.DecisionRefused, "account_locked"},
		{event.KindLoginFailed, 429, event.DecisionRefused, "rate_limited"},
		{event.KindLoginFailed, 503, event.DecisionError, "directory_unavailable"},
		{event.KindLogout, 200, event.DecisionAllow, ""},
		{event.KindLoginFailed, resp.StatusCode, event.DecisionRefused, "invalid_credentials"},
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.events) != len(want) {
		t.Fatalf("%d events recorded, want %d", len(rec.events), len(want))
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("REST login with a wrong password: %d, want 401", resp.StatusCode)
	}
	for i, w := range want {
		e := rec.events[i]
		if e.Kind != w.kind || e.ResponseCode != w.code || e.Decision != w.decision || e.RefusalReason != w.reason {
			t.Errorf("event %d: %s %d %s %q, want %s %d %s %q", i, e.Kind, e.ResponseCode, e.Decision, e.RefusalReason,
				w.kind, w.code, w.decision, w.reason)
		}
	}
}
