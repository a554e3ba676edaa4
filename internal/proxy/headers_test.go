package proxy

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestTakeClientIdentityHeaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		header  http.Header
		want    *ImpersonationRequest
		wantErr string
	}{
		{name: "none", header: http.Header{"Accept": {"application/json"}}},
		{name: "kubectl --as", header: http.Header{"Impersonate-User": {"bob"}, "Impersonate-Group": {"devs", "ops"}},
			want: &ImpersonationRequest{User: "bob", Groups: []string{"devs", "ops"}}},
		{name: "uid and extra", header: http.Header{"Impersonate-User": {"bob"}, "Impersonate-Uid": {"42"}, "Impersonate-Extra-Kaccess.io%2fteam": {"a", "b"}},
			want: &ImpersonationRequest{User: "bob", UID: "42", Extra: map[string][]string{"kaccess.io/team": {"a", "b"}}}},
		{name: "group without user", header: http.Header{"Impersonate-Group": {"system:masters"}}, wantErr: "need Impersonate-User"},
		{name: "uid without user", header: http.Header{"Impersonate-Uid": {"0"}}, wantErr: "need Impersonate-User"},
		{name: "extra without user", header: http.Header{"Impersonate-Extra-Scopes": {"x"}}, wantErr: "need Impersonate-User"},
		{name: "two users", header: http.Header{"Impersonate-User": {"a", "b"}}, wantErr: "exactly one"},
		{name: "empty user", header: http.Header{"Impersonate-User": {""}}, wantErr: "exactly one"},
		{name: "x-remote-user", header: http.Header{"X-Remote-User": {"admin"}}, wantErr: "X-Remote-User is not accepted"},
		{name: "x-remote-group lowercase", header: http.Header{"x-remote-group": {"system:masters"}}, wantErr: "X-Remote-Group is not accepted"},
		{name: "x-remote-extra", header: http.Header{"X-Remote-Extra-Foo": {"x"}}, wantErr: "not accepted"},
		{name: "unknown impersonate header", header: http.Header{"Impersonate-Whatever": {"x"}}, wantErr: "not accepted"},
		{name: "malformed extra key", header: http.Header{"Impersonate-User": {"bob"}, "Impersonate-Extra-%zz": {"x"}}, wantErr: "malformed"},
		{name: "connection names an impersonation header", header: http.Header{"Connection": {"keep-alive, impersonate-group"}}, wantErr: "Connection may not name Impersonate-Group"},
		{name: "connection names authorization", header: http.Header{"Connection": {"Authorization"}}, wantErr: "may not name Authorization"},
		{name: "two spellings of one user", header: http.Header{"Impersonate-User": {"a"}, "impersonate-user": {"b"}}, wantErr: "exactly one"},
		{name: "name CanonicalHeaderKey leaves alone", header: http.Header{"Impersonate-User": {"bob"}, "impersonate-group x": {"system:masters"}},
			wantErr: "not accepted"},
		{name: "NUL in an x-remote name", header: http.Header{"x-remote-user\x00": {"admin"}}, wantErr: "not accepted"},
		{name: "ordinary connection header", header: http.Header{"Connection": {"keep-alive, Upgrade"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := tt.header.Clone()
			got, err := takeClientIdentityHeaders(h)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				// Left as it was, so the refusal can name every identity header sent.
				if !reflect.DeepEqual(h, tt.header) {
					t.Fatalf("header changed on error: %v", h)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for name := range h {
				if strings.HasPrefix(http.CanonicalHeaderKey(name), "Impersonate-") {
					t.Errorf("%s left on the request", name)
				}
			}
		})
	}
}

func TestSetImpersonationEscapesExtraKeys(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	setImpersonation(h, "alice", "u-1", []string{"g1", "g2"}, map[string][]string{"kaccess.io/source": {"ldap:corp"}, "a b%": {"v"}})
	if got := h.Values("Impersonate-Group"); !reflect.DeepEqual(got, []string{"g1", "g2"}) {
		t.Errorf("groups = %v", got)
	}
	if got := h.Get("Impersonate-Extra-Kaccess.io%2Fsource"); got != "ldap:corp" {
		t.Errorf("extra source = %q; headers %v", got, h)
	}
	if got := h.Get("Impersonate-Extra-A%20b%25"); got != "v" {
		t.Errorf("escaped extra = %q; headers %v", got, h)
	}
	// What we write, a client-side parser reads back the same.
	back, err := takeClientIdentityHeaders(h)
	if err != nil {
		t.Fatal(err)
	}
	if back.Extra["kaccess.io/source"][0] != "ldap:corp" || back.Extra["a b%"][0] != "v" || back.UID != "u-1" {
		t.Errorf("round trip = %+v", back)
	}
}

func TestIdentityHeaderNames(t *testing.T) {
	t.Parallel()
	h := http.Header{
		"x-remote-user": {"admin"}, "Impersonate-Group": {"system:masters"}, "Authorization": {"Bearer a", "Bearer b"},
		"Connection": {"close, Impersonate-User"}, "Accept": {"*/*"}, "X-Forwarded-For": {"1.2.3.4"},
	}
	got := identityHeaderNames(h)
	want := []string{"Authorization", "Connection", "Impersonate-Group", "X-Remote-User"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := identityHeaderNames(http.Header{"Connection": {"keep-alive"}, "Accept": {"*/*"}}); got != nil {
		t.Fatalf("ordinary headers named: %v", got)
	}
}
