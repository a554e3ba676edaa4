package apiserver

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/kaccess/kaccess/internal/authn"
)

func TestIsGRPCContentType(t *testing.T) {
	t.Parallel()
	for ct, want := range map[string]bool{
		"application/grpc": true, "application/grpc+proto": true, "application/grpc;charset=utf-8": true,
		"application/grpc-web": false, "application/json": false, "": false,
	} {
		if got := isGRPCContentType(ct); got != want {
			t.Errorf("isGRPCContentType(%q) = %v, want %v", ct, got, want)
		}
	}
}

func TestNewValidatesEveryField(t *testing.T) {
	t.Parallel()
	_, err := New(Config{
		TLS: &tls.Config{},
		Sources: map[string]Source{
			"Bad Name": {Type: "ldap", Passwords: authn.PasswordFunc(nil)},
			"corp":     {},
		},
	})
	if err == nil {
		t.Fatal("New accepted an empty config")
	}
	for _, want := range []string{
		"apiserver.sessions: required", "apiserver.authenticator: required", "apiserver.tls: has no certificate",
		`apiserver.sources["Bad Name"]: name must be`, `apiserver.sources["corp"].type: required`,
		`apiserver.sources["corp"]: set exactly one of passwords`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestHeaderMatcherDropsClientAddress(t *testing.T) {
	t.Parallel()
	for header, want := range map[string]bool{
		"Grpc-Metadata-X-Kaccess-Client-Address": false,
		"grpc-metadata-x-kaccess-client-address": false,
		"Authorization":                          true,
	} {
		if _, got := headerMatcher(header); got != want {
			t.Errorf("headerMatcher(%q) forwards = %v, want %v", header, got, want)
		}
	}
}
