package oidc_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/authn/oidc"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := oidc.Config{Name: "okta", IssuerURL: "https://login.example.com", ClientIDs: []string{"kaccess"}}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.UsernameClaim != "sub" || c.UsernamePrefix != "okta:" || c.GroupsClaim != "groups" || c.GroupsPrefix != "okta:" ||
		strings.Join(c.SigningAlgs, ",") != "RS256,ES256" || time.Duration(c.ClockSkew) != 30*time.Second {
		t.Errorf("defaults: %+v", c)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(c *oidc.Config)
		want []string // substrings, each of a separate problem
	}{
		{"empty", func(c *oidc.Config) { *c = oidc.Config{} }, []string{"name: required", "issuerURL: required", "clientIDs: at least one"}},
		{"http issuer", func(c *oidc.Config) { c.IssuerURL = "http://idp.example.com" }, []string{"issuerURL: \"http://idp.example.com\" is http://"}},
		{"http issuer allowed for tests", func(c *oidc.Config) { c.IssuerURL, c.InsecureAllowHTTP = "http://127.0.0.1:9998/", true }, nil},
		{"not a URL", func(c *oidc.Config) { c.IssuerURL = "login.example.com" }, []string{"issuerURL: \"login.example.com\" is not a URL"}},
		{"alg none and HS256", func(c *oidc.Config) { c.SigningAlgs = []string{"RS256", "none", "HS256", "XX1"} },
			[]string{"signingAlgs[1]: \"none\"", "signingAlgs[2]: \"HS256\" (HMAC)", "signingAlgs[3]: \"XX1\" is not one of"}},
		{"skew too large", func(c *oidc.Config) { c.ClockSkew = oidc.Duration(6 * time.Minute) }, []string{"clockSkew: 6m0s is outside"}},
		{"missing CA file", func(c *oidc.Config) { c.CAFile = "/nonexistent/ca.crt" }, []string{"caFile: "}},
		{"bad name and empty client id", func(c *oidc.Config) { c.Name, c.ClientIDs = "a:b", []string{""} },
			[]string{"name: \"a:b\" may not contain", "clientIDs[0]: empty"}},
		{"empty required value", func(c *oidc.Config) { c.RequiredClaims = map[string]string{"hd": ""} }, []string{"requiredClaims.hd: the required value is empty"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := oidc.Config{Name: "okta", IssuerURL: "https://login.example.com", ClientIDs: []string{"kaccess"}}
			tc.edit(&c)
			c.SetDefaults()
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}

func TestValidateAllDuplicates(t *testing.T) {
	t.Parallel()
	cfgs := []oidc.Config{
		{Name: "a", IssuerURL: "https://idp.example.com", ClientIDs: []string{"x"}},
		{Name: "a", IssuerURL: "https://idp.example.com", ClientIDs: []string{"y"}},
		{Name: "c", IssuerURL: "http://other", ClientIDs: []string{"z"}},
	}
	for i := range cfgs {
		cfgs[i].SetDefaults()
	}
	err := oidc.ValidateAll(cfgs)
	for _, w := range []string{"oidc[1].name: \"a\" is also", "oidc[1].issuerURL:", "oidc[2].issuerURL: \"http://other\" is http://"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v lacks %q", err, w)
		}
	}
}

func TestConfigJSON(t *testing.T) {
	t.Parallel()
	var c oidc.Config
	in := `{"name":"okta","issuerURL":"https://login.example.com","clientIDs":["kaccess"],"usernameClaim":"email",
	"groupsPrefix":"-","requiredClaims":{"hd":"example.com"},"signingAlgs":["ES256"],"clockSkew":"1m"}`
	if err := json.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.ClockSkew) != time.Minute || c.RequiredClaims["hd"] != "example.com" || c.GroupsPrefix != "-" {
		t.Errorf("%+v", c)
	}
	if err := json.Unmarshal([]byte(`{"clockSkew":30}`), &c); err == nil {
		t.Error("a number of nanoseconds was accepted as a duration")
	}
}
