package authn

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// FuzzTakeBearerToken sends whatever Authorization and Sec-WebSocket-Protocol values the
// fuzzer finds. Whatever happens, the Authorization header is gone afterwards and no bearer
// protocol entry is left for the upstream; a token returned is visible ASCII without spaces or
// commas; an error is one of the four credential errors.
func FuzzTakeBearerToken(f *testing.F) {
	ws := func(token string) string {
		return wsProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(token))
	}
	seeds := []struct{ auth, auth2, proto string }{
		{"Bearer abc.def.ghi", "", ""},
		{"bearer abc", "", ""},
		{"Bearer ", "", ""},
		{"Basic YTpi", "", ""},
		{"Bearer a, Bearer b", "", ""},
		{"Bearer a", "Bearer b", ""},
		{"Bearer\ta", "", ""},
		{"  Bearer   a  ", "", ""},
		{"", "", "v5.channel.k8s.io, " + ws("tok")},
		{"", "", ws("a") + "," + ws("b")},
		{"", "", wsProtocolPrefix + "!!!"},
		{"", "", wsProtocolPrefix + "YQ=="},
		{"", "", ws("a b")},
		{"", "", ws("a\r\nX-Remote-User: admin")},
		{"Bearer x", "", ws("y")},
		{"Bearer x", "", wsProtocolPrefix},
		{"Bearer \x00", "", ""},
	}
	for _, s := range seeds {
		f.Add(s.auth, s.auth2, s.proto)
	}
	f.Fuzz(func(t *testing.T, auth, auth2, proto string) {
		h := http.Header{}
		if auth != "" {
			h.Add("Authorization", auth)
		}
		if auth2 != "" {
			h.Add("Authorization", auth2)
		}
		if proto != "" {
			h.Add("Sec-WebSocket-Protocol", proto)
		}
		r := &http.Request{Header: h}
		token, err := TakeBearerToken(r)
		if _, ok := r.Header["Authorization"]; ok {
			t.Fatalf("Authorization left on the request (err %v)", err)
		}
		for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
			for _, p := range strings.Split(v, ",") {
				if strings.HasPrefix(strings.TrimSpace(p), wsProtocolPrefix) {
					t.Fatalf("bearer protocol %q left on the request (err %v)", p, err)
				}
			}
		}
		if err != nil {
			if token != "" {
				t.Fatalf("token %q returned with error %v", token, err)
			}
			for _, want := range []error{ErrNoCredential, ErrMultipleCredential, ErrNotBearer, ErrBadWebSocketToken} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("unexpected error %v", err)
		}
		if !validToken(token) || strings.ContainsAny(token, " ,\t\r\n") {
			t.Fatalf("token %q holds a separator or control byte", token)
		}
	})
}
