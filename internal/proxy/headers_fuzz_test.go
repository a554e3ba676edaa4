package proxy

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// fuzzHeader builds a header from "name: value" lines. Names go into the map as written (as a
// handler in front could leave them), not only in canonical form.
func fuzzHeader(raw string) http.Header {
	h := http.Header{}
	for _, line := range strings.Split(raw, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		h[name] = append(h[name], strings.TrimPrefix(value, " "))
	}
	return h
}

func isIdentityName(name string) bool {
	lower := strings.ToLower(name)
	return lower == "authorization" || strings.HasPrefix(lower, "impersonate-") || strings.HasPrefix(lower, "x-remote-")
}

// FuzzTakeClientIdentityHeaders: after success no Impersonate-* or X-Remote-* header is left
// under any spelling of its name; on error the header is exactly as it was; a request returned
// always names a user. identityHeaderNames lists only identity headers (or a Connection header
// naming one), and lists every identity header present.
func FuzzTakeClientIdentityHeaders(f *testing.F) {
	for _, s := range []string{
		"Impersonate-User: bob\nImpersonate-Group: devs\nImpersonate-Group: ops",
		"Impersonate-User: bob\nImpersonate-Uid: 42\nImpersonate-Extra-Kaccess.io%2fteam: a",
		"Impersonate-Group: system:masters",
		"Impersonate-User: a\nImpersonate-User: b",
		"Impersonate-User: a\nimpersonate-user: b",
		"impersonate-user: a\nimpersonate-group: system:masters",
		"Impersonate-User: bob\nimpersonate-user x: admin",
		"Impersonate-User: bob\nIMPERSONATE-GROUP\x00: system:masters",
		"X-Remote-User: admin",
		"x-remote-group: system:masters",
		"Impersonate-User: bob\nX-Remote-Extra-Foo: x",
		"Impersonate-Whatever: x",
		"Impersonate-User: bob\nImpersonate-Extra-%zz: x",
		"Impersonate-User: bob\nImpersonate-Extra-: x",
		"Connection: keep-alive, impersonate-group",
		"Connection: Authorization",
		"Connection: keep-alive, Upgrade\nAccept: */*",
		"Impersonate-User: \nImpersonate-Group: x",
		"Authorization: Bearer x\nImpersonate-User: bob",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		h := fuzzHeader(raw)
		names := identityHeaderNames(h)
		for _, n := range names {
			if !isIdentityName(n) && !strings.EqualFold(n, "Connection") {
				t.Fatalf("identityHeaderNames lists %q", n)
			}
		}
		for name := range h {
			if isIdentityName(name) && !containsFold(names, name) {
				t.Fatalf("identityHeaderNames %v misses %q", names, name)
			}
		}
		before := h.Clone()
		req, err := takeClientIdentityHeaders(h)
		if err != nil {
			if req != nil {
				t.Fatalf("request %+v returned with error %v", req, err)
			}
			if !reflect.DeepEqual(h, before) {
				t.Fatalf("header changed on error %v:\n got %v\nwant %v", err, h, before)
			}
			return
		}
		for name := range h {
			lower := strings.ToLower(name)
			if strings.HasPrefix(lower, "impersonate-") || strings.HasPrefix(lower, "x-remote-") {
				t.Fatalf("%q left on the request after success", name)
			}
		}
		if req != nil && req.User == "" {
			t.Fatalf("impersonation without a user: %+v", req)
		}
	})
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}
