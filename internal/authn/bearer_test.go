package authn

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"testing"
)

func TestTakeBearerToken(t *testing.T) {
	t.Parallel()
	ws := func(token string) string {
		return wsProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(token))
	}
	tests := []struct {
		name         string
		header       http.Header
		want         string
		wantErr      error
		wantProtocol string
	}{
		{name: "bearer", header: http.Header{"Authorization": {"Bearer abc.def"}}, want: "abc.def"},
		{name: "scheme case", header: http.Header{"Authorization": {"bearer abc"}}, want: "abc"},
		{name: "none", header: http.Header{}, wantErr: ErrNoCredential},
		{name: "basic", header: http.Header{"Authorization": {"Basic YTpi"}}, wantErr: ErrNotBearer},
		{name: "empty bearer", header: http.Header{"Authorization": {"Bearer "}}, wantErr: ErrNotBearer},
		{name: "two tokens in one header", header: http.Header{"Authorization": {"Bearer a, Bearer b"}}, wantErr: ErrNotBearer},
		{name: "two headers", header: http.Header{"Authorization": {"Bearer a", "Bearer b"}}, wantErr: ErrMultipleCredential},
		{name: "websocket token", header: http.Header{"Sec-Websocket-Protocol": {"v5.channel.k8s.io, " + ws("tok"), "v4.channel.k8s.io"}},
			want: "tok", wantProtocol: "v5.channel.k8s.io, v4.channel.k8s.io"},
		{name: "websocket token only", header: http.Header{"Sec-Websocket-Protocol": {ws("tok")}}, want: "tok"},
		{name: "websocket and header", header: http.Header{"Authorization": {"Bearer a"}, "Sec-Websocket-Protocol": {ws("b")}}, wantErr: ErrMultipleCredential},
		{name: "two websocket tokens", header: http.Header{"Sec-Websocket-Protocol": {ws("a") + "," + ws("b")}}, wantErr: ErrMultipleCredential},
		{name: "websocket garbage", header: http.Header{"Sec-Websocket-Protocol": {wsProtocolPrefix + "!!!"}}, wantErr: ErrBadWebSocketToken},
		{name: "websocket garbage with header", header: http.Header{"Authorization": {"Bearer a"}, "Sec-Websocket-Protocol": {wsProtocolPrefix + "!!!"}},
			wantErr: ErrBadWebSocketToken},
		{name: "websocket token with space", header: http.Header{"Sec-Websocket-Protocol": {ws("a b")}}, wantErr: ErrBadWebSocketToken},
		{name: "websocket token with newline", header: http.Header{"Sec-Websocket-Protocol": {ws("a\nX-Remote-User: admin")}}, wantErr: ErrBadWebSocketToken},
		{name: "websocket token with comma", header: http.Header{"Sec-Websocket-Protocol": {ws("a,b")}}, wantErr: ErrBadWebSocketToken},
		{name: "control byte in header token", header: http.Header{"Authorization": {"Bearer a\x00b"}}, wantErr: ErrNotBearer},
		{name: "websocket without token", header: http.Header{"Sec-Websocket-Protocol": {"v5.channel.k8s.io"}, "Authorization": {"Bearer x"}},
			want: "x", wantProtocol: "v5.channel.k8s.io"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, _ := http.NewRequest(http.MethodGet, "https://gw/api", nil)
			r.Header = tt.header.Clone()
			got, err := TakeBearerToken(r)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("token = %q, want %q", got, tt.want)
			}
			if r.Header.Get("Authorization") != "" {
				t.Error("Authorization left on the request")
			}
			if tt.wantErr == nil && r.Header.Get("Sec-Websocket-Protocol") != tt.wantProtocol {
				t.Errorf("Sec-WebSocket-Protocol = %q, want %q", r.Header.Get("Sec-Websocket-Protocol"), tt.wantProtocol)
			}
		})
	}
}

func TestUnionStopsAtFirstClaim(t *testing.T) {
	t.Parallel()
	notMine := TokenFunc(func(context.Context, string) (*Identity, bool, error) { return nil, false, nil })
	rejects := TokenFunc(func(context.Context, string) (*Identity, bool, error) {
		return nil, false, &RejectedError{Source: "s", Reason: "revoked", Message: "m", Err: errors.New("revoked")}
	})
	accepts := TokenFunc(func(context.Context, string) (*Identity, bool, error) { return &Identity{User: "alice"}, true, nil })

	if id, ok, err := (Union{notMine, accepts}).AuthenticateToken(context.Background(), "t"); !ok || err != nil || id.User != "alice" {
		t.Fatalf("want alice from the second source, got %v %v %v", id, ok, err)
	}
	// A source that claims and rejects the token decides: a later source must not accept it.
	if _, ok, err := (Union{rejects, accepts}).AuthenticateToken(context.Background(), "t"); ok || FailureReason(err) != "revoked" {
		t.Fatalf("want the rejection to win, got ok=%v err=%v", ok, err)
	}
	if _, ok, err := (Union{notMine}).AuthenticateToken(context.Background(), "t"); ok || err != nil {
		t.Fatalf("want not recognized, got ok=%v err=%v", ok, err)
	}
}
