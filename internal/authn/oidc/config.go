package oidc

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/duration"
)

// Defaults.
const (
	// DefaultUsernameClaim is "sub": the one claim every ID token has, and that a provider never
	// gives to another person. Set usernameClaim "email" for readable names in RBAC bindings
	// (a token whose email_verified is false is then refused).
	DefaultUsernameClaim = "sub"
	DefaultGroupsClaim   = "groups"
	DefaultClockSkew     = 30 * time.Second
	MaxClockSkew         = 5 * time.Minute
	// NoPrefix as usernamePrefix or groupsPrefix means no prefix at all.
	NoPrefix        = "-"
	prefixSeparator = ":"
)

// DefaultSigningAlgs are the algorithms accepted when signingAlgs is empty.
var DefaultSigningAlgs = []string{"RS256", "ES256"}

// allowedAlgs are the asymmetric JWS algorithms that may be configured. "none" and the HMAC
// algorithms (HS256/384/512) are never accepted: with HS* a public key would become a secret.
var allowedAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Duration is a time.Duration written as "30s" in the config file.
type Duration = duration.Duration

// Config is one OpenID Connect issuer whose ID tokens the gateway accepts.
type Config struct {
	// Name names the source ("okta"): identities come from "oidc:<name>".
	Name string `json:"name"`
	// IssuerURL must equal the tokens' "iss" claim exactly, and serves
	// <issuerURL>/.well-known/openid-configuration. https:// unless insecureAllowHTTP.
	IssuerURL string `json:"issuerURL"`
	// ClientIDs are the accepted audiences: a token's "aud" must contain one of them.
	ClientIDs []string `json:"clientIDs"`
	// UsernameClaim holds the user's name; default "sub". With "email", a token whose
	// email_verified claim is false is refused.
	UsernameClaim string `json:"usernameClaim,omitempty"`
	// UsernamePrefix is put before the username; default "<name>:". Set "-" for none.
	UsernamePrefix string `json:"usernamePrefix,omitempty"`
	// GroupsClaim holds the groups (a list of strings, or one string); default "groups".
	// A token without it has no groups; a groups claim of another type is refused.
	GroupsClaim string `json:"groupsClaim,omitempty"`
	// GroupsPrefix is put before every group; default "<name>:". Set "-" for none.
	GroupsPrefix string `json:"groupsPrefix,omitempty"`
	// RequiredClaims must be present in the token with exactly these string values.
	RequiredClaims map[string]string `json:"requiredClaims,omitempty"`
	// SigningAlgs are the accepted JWS algorithms; default RS256 and ES256. "none" and HS*
	// are always refused.
	SigningAlgs []string `json:"signingAlgs,omitempty"`
	// CAFile holds the PEM CAs the provider's TLS certificate must chain to; default: the
	// system roots.
	CAFile string `json:"caFile,omitempty"`
	// ClockSkew is the leeway on exp, nbf and iat; default 30s, at most 5m.
	ClockSkew Duration `json:"clockSkew,omitempty"`
	// InsecureAllowHTTP allows an http:// issuer: discovery and keys could then be forged
	// by anyone on the path. Only for tests and loopback.
	InsecureAllowHTTP bool `json:"insecureAllowHTTP,omitempty"`
}

// Source is the Identity.Source of tokens from this issuer: "oidc:<name>".
func (c *Config) Source() string { return "oidc:" + c.Name }

// SetDefaults fills in what was left empty.
func (c *Config) SetDefaults() {
	if c.UsernameClaim == "" {
		c.UsernameClaim = DefaultUsernameClaim
	}
	if c.UsernamePrefix == "" {
		c.UsernamePrefix = c.Name + prefixSeparator
	}
	if c.GroupsClaim == "" {
		c.GroupsClaim = DefaultGroupsClaim
	}
	if c.GroupsPrefix == "" {
		c.GroupsPrefix = c.Name + prefixSeparator
	}
	if len(c.SigningAlgs) == 0 {
		c.SigningAlgs = append([]string(nil), DefaultSigningAlgs...)
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = Duration(DefaultClockSkew)
	}
}

func (c *Config) usernamePrefix() string { return prefix(c.UsernamePrefix) }
func (c *Config) groupsPrefix() string   { return prefix(c.GroupsPrefix) }

func prefix(p string) string {
	if p == NoPrefix {
		return ""
	}
	return p
}

// Validate returns every problem at once, each with its field path. Call SetDefaults first.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Name == "" {
		bad("name", "required")
	} else if strings.ContainsAny(c.Name, ": \t\n/") {
		bad("name", "%q may not contain ':', '/' or spaces", c.Name)
	}
	if c.IssuerURL == "" {
		bad("issuerURL", "required, e.g. https://login.example.com")
	} else if u, err := url.Parse(c.IssuerURL); err != nil || u.Host == "" {
		bad("issuerURL", "%q is not a URL such as https://login.example.com", c.IssuerURL)
	} else {
		switch {
		case u.Scheme == "https":
		case u.Scheme == "http" && c.InsecureAllowHTTP:
		case u.Scheme == "http":
			bad("issuerURL", "%q is http://: anyone on the path could forge its keys; use https:// (or set insecureAllowHTTP for tests)", c.IssuerURL)
		default:
			bad("issuerURL", "scheme %q is not https", u.Scheme)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			bad("issuerURL", "%q may not have a query or fragment", c.IssuerURL)
		}
	}
	if len(c.ClientIDs) == 0 {
		bad("clientIDs", "at least one client ID (audience) is required")
	}
	for i, id := range c.ClientIDs {
		if strings.TrimSpace(id) == "" {
			bad(fmt.Sprintf("clientIDs[%d]", i), "empty")
		}
	}
	if c.UsernameClaim == "" {
		bad("usernameClaim", "required")
	}
	if c.GroupsClaim == "" {
		bad("groupsClaim", "required")
	}
	for field, p := range map[string]string{"usernamePrefix": c.UsernamePrefix, "groupsPrefix": c.GroupsPrefix} {
		if strings.ContainsAny(p, " \t\n") {
			bad(field, "%q may not contain spaces", p)
		}
	}
	for k, v := range c.RequiredClaims {
		if k == "" {
			bad("requiredClaims", "a claim name is empty")
		} else if v == "" {
			bad("requiredClaims."+k, "the required value is empty")
		}
	}
	if len(c.SigningAlgs) == 0 {
		bad("signingAlgs", "at least one algorithm is required")
	}
	for i, alg := range c.SigningAlgs {
		field := fmt.Sprintf("signingAlgs[%d]", i)
		switch {
		case strings.EqualFold(alg, "none"):
			bad(field, "\"none\" means unsigned tokens and is never accepted")
		case strings.HasPrefix(strings.ToUpper(alg), "HS"):
			bad(field, "%q (HMAC) is never accepted: the provider's public key would become a shared secret", alg)
		case !contains(allowedAlgs, alg):
			bad(field, "%q is not one of %s", alg, strings.Join(allowedAlgs, ", "))
		}
	}
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			bad("caFile", "%v", err)
		}
	}
	if d := time.Duration(c.ClockSkew); d < 0 || d > MaxClockSkew {
		bad("clockSkew", "%s is outside 0s..%s", d, MaxClockSkew)
	}
	return errors.Join(errs...)
}

// ValidateAll validates each config (prefixing its path with "oidc[i]") and that no two share a
// name or an issuer URL: the issuer picks the config, so it must be unique.
func ValidateAll(cfgs []Config) error {
	var errs []error
	names := map[string]int{}
	issuers := map[string]int{}
	for i := range cfgs {
		c := &cfgs[i]
		if err := c.Validate(); err != nil {
			errs = append(errs, prefixErrors(fmt.Sprintf("oidc[%d].", i), err))
		}
		if j, dup := names[c.Name]; dup && c.Name != "" {
			errs = append(errs, fmt.Errorf("oidc[%d].name: %q is also the name of oidc[%d]", i, c.Name, j))
		} else {
			names[c.Name] = i
		}
		if j, dup := issuers[c.IssuerURL]; dup && c.IssuerURL != "" {
			errs = append(errs, fmt.Errorf("oidc[%d].issuerURL: %q is also the issuer of oidc[%d]; list its client IDs in one entry", i, c.IssuerURL, j))
		} else {
			issuers[c.IssuerURL] = i
		}
	}
	return errors.Join(errs...)
}

func prefixErrors(p string, err error) error {
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		return fmt.Errorf("%s%w", p, err)
	}
	var out []error
	for _, e := range joined.Unwrap() {
		out = append(out, fmt.Errorf("%s%w", p, e))
	}
	return errors.Join(out...)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
