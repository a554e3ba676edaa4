package ldap

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/kaccess/kaccess/internal/duration"
)

// Directory types.
const (
	TypeActiveDirectory = "activedirectory"
	TypeLDAP            = "ldap"
)

// Group resolution methods. Active Directory: TokenGroups or InChain (all transitive groups in
// one query each). OpenLDAP-style: the user's MemberOf attribute, or a search of groups by
// member DN (GroupOfNames, GroupOfUniqueNames) or by login name (PosixGroup).
const (
	GroupMethodTokenGroups        = "tokenGroups"
	GroupMethodInChain            = "inchain"
	GroupMethodMemberOf           = "memberOf"
	GroupMethodGroupOfNames       = "groupOfNames"
	GroupMethodGroupOfUniqueNames = "groupOfUniqueNames"
	GroupMethodPosixGroup         = "posixGroup"
)

// Defaults. tokenGroups is the AD default: on Samba with 1,000 nested groups a login took 10 ms
// above the bare bind with it and 2.7 s above with the in-chain rule (numbers in the package doc).
const (
	DefaultADUserFilter    = "(&(objectClass=user)(|(sAMAccountName={0})(userPrincipalName={0})))"
	DefaultLDAPUserFilter  = "(&(objectClass=inetOrgPerson)(uid={0}))"
	DefaultADGroupMethod   = GroupMethodTokenGroups
	DefaultLDAPGroupMethod = GroupMethodMemberOf
	DefaultDialTimeout     = 5 * time.Second
	DefaultRequestTimeout  = 10 * time.Second
	DefaultPoolSize        = 4
	// DefaultGroupNameCacheTTL is how long AD group names found by SID are kept.
	DefaultGroupNameCacheTTL = 10 * time.Minute
	defaultGroupNameAttr     = "cn"
	maxPoolSize              = 64
	filterPlaceholder        = "{0}"
	adUsernameAttribute      = "sAMAccountName"
	ldapUsernameAttribute    = "uid"
	adUIDAttribute           = "objectGUID"
	ldapUIDAttribute         = "entryUUID"
	maxConfiguredTimeout     = 5 * time.Minute
	minConfiguredTimeout     = 10 * time.Millisecond
	groupPrefixSeparator     = ":"
)

// Duration is a time.Duration written as "30s" in the config file.
type Duration = duration.Duration

// Timeouts bound each step of a login.
type Timeouts struct {
	// Dial bounds connecting (TCP and TLS) to one URL; default 5s.
	Dial Duration `json:"dial,omitempty"`
	// Request bounds each LDAP operation (bind, search); default 10s.
	Request Duration `json:"request,omitempty"`
}

// Config is one LDAP or Active Directory identity source.
type Config struct {
	// Name names the source ("corp"): identities come from "ldap:<name>".
	Name string `json:"name"`
	// Type is "activedirectory" or "ldap".
	Type string `json:"type"`
	// URLs are tried in order (failover): ldaps://host:636, or ldap://host:389 with StartTLS.
	URLs []string `json:"urls"`
	// StartTLS upgrades ldap:// URLs to TLS before any bind.
	StartTLS bool `json:"startTLS,omitempty"`
	// CAFile holds the PEM CAs the directory's certificate must chain to; default: system roots.
	CAFile string `json:"caFile,omitempty"`
	// TLSServerName is the name checked in the directory's certificate; default: the URL's host.
	TLSServerName string `json:"tlsServerName,omitempty"`
	// InsecureAllowPlain allows ldap:// without StartTLS: passwords then cross the network in
	// the clear. Only for tests and loopback.
	InsecureAllowPlain bool `json:"insecureAllowPlain,omitempty"`

	// BindDN is the service account searches run as (a DN, or a UPN for AD).
	BindDN string `json:"bindDN"`
	// BindPasswordFile or BindPasswordEnv (exactly one) holds its password: never the config.
	BindPasswordFile string `json:"bindPasswordFile,omitempty"`
	BindPasswordEnv  string `json:"bindPasswordEnv,omitempty"`

	// UserBaseDN is where users are searched (subtree).
	UserBaseDN string `json:"userBaseDN"`
	// UserFilter finds the user; {0} is replaced by the escaped login name. Default for AD:
	// sAMAccountName or userPrincipalName; for ldap: inetOrgPerson by uid.
	UserFilter string `json:"userFilter,omitempty"`
	// UsernameAttribute is the user's Kubernetes name as stored; default sAMAccountName / uid.
	UsernameAttribute string `json:"usernameAttribute,omitempty"`
	// UIDAttribute is the stable id; default objectGUID (AD) / entryUUID (ldap).
	UIDAttribute string `json:"uidAttribute,omitempty"`

	// GroupMethod: AD "tokenGroups" (default) | "inchain"; ldap "memberOf" (default) |
	// "groupOfNames" | "groupOfUniqueNames" | "posixGroup".
	GroupMethod string `json:"groupMethod,omitempty"`
	// GroupBaseDN is where groups are searched; default UserBaseDN.
	GroupBaseDN string `json:"groupBaseDN,omitempty"`
	// GroupNameAttribute names a group; default cn.
	GroupNameAttribute string `json:"groupNameAttribute,omitempty"`
	// GroupPrefix is put before every group name; default "<name>:". Set "-" for none.
	GroupPrefix string `json:"groupPrefix,omitempty"`

	Timeouts Timeouts `json:"timeouts,omitempty"`
	// PoolSize is the number of service-bound connections kept; default 4.
	PoolSize int `json:"poolSize,omitempty"`
}

// SetDefaults fills in what was left empty.
func (c *Config) SetDefaults() {
	ad := c.Type == TypeActiveDirectory
	if c.UserFilter == "" {
		c.UserFilter = pick(ad, DefaultADUserFilter, DefaultLDAPUserFilter)
	}
	if c.UsernameAttribute == "" {
		c.UsernameAttribute = pick(ad, adUsernameAttribute, ldapUsernameAttribute)
	}
	if c.UIDAttribute == "" {
		c.UIDAttribute = pick(ad, adUIDAttribute, ldapUIDAttribute)
	}
	if c.GroupMethod == "" {
		c.GroupMethod = pick(ad, DefaultADGroupMethod, DefaultLDAPGroupMethod)
	}
	if c.GroupBaseDN == "" {
		c.GroupBaseDN = c.UserBaseDN
	}
	if c.GroupNameAttribute == "" {
		c.GroupNameAttribute = defaultGroupNameAttr
	}
	if c.GroupPrefix == "" {
		c.GroupPrefix = c.Name + groupPrefixSeparator
	}
	if c.Timeouts.Dial == 0 {
		c.Timeouts.Dial = Duration(DefaultDialTimeout)
	}
	if c.Timeouts.Request == 0 {
		c.Timeouts.Request = Duration(DefaultRequestTimeout)
	}
	if c.PoolSize == 0 {
		c.PoolSize = DefaultPoolSize
	}
}

func pick(cond bool, a, b string) string {
	if cond {
		return a
	}
	return b
}

// groupPrefix returns the prefix to use ("-" means none).
func (c *Config) groupPrefix() string {
	if c.GroupPrefix == "-" {
		return ""
	}
	return c.GroupPrefix
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
	ad := false
	switch c.Type {
	case TypeActiveDirectory:
		ad = true
	case TypeLDAP:
	case "":
		bad("type", "required: %q or %q", TypeActiveDirectory, TypeLDAP)
	default:
		bad("type", "%q is not %q or %q", c.Type, TypeActiveDirectory, TypeLDAP)
	}
	if len(c.URLs) == 0 {
		bad("urls", "at least one URL is required")
	}
	for i, raw := range c.URLs {
		field := fmt.Sprintf("urls[%d]", i)
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			bad(field, "%q is not a URL such as ldaps://dc1.example.com:636", raw)
			continue
		}
		switch u.Scheme {
		case "ldaps":
			if c.StartTLS {
				bad(field, "startTLS is for ldap:// URLs; %q is already TLS", raw)
			}
		case "ldap":
			if !c.StartTLS && !c.InsecureAllowPlain {
				bad(field, "%q sends passwords in the clear: use ldaps://, or set startTLS (or insecureAllowPlain for tests)", raw)
			}
		default:
			bad(field, "scheme %q is not ldaps or ldap", u.Scheme)
		}
		if u.Path != "" && u.Path != "/" {
			bad(field, "%q: a base DN in the URL is not used; set userBaseDN", raw)
		}
	}
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			bad("caFile", "%v", err)
		}
	}
	if c.BindDN == "" {
		bad("bindDN", "required: searches run as a service account, never anonymously")
	}
	switch {
	case c.BindPasswordFile == "" && c.BindPasswordEnv == "":
		bad("bindPasswordFile", "one of bindPasswordFile or bindPasswordEnv is required")
	case c.BindPasswordFile != "" && c.BindPasswordEnv != "":
		bad("bindPasswordFile", "set only one of bindPasswordFile and bindPasswordEnv")
	case c.BindPasswordFile != "":
		if _, err := os.Stat(c.BindPasswordFile); err != nil {
			bad("bindPasswordFile", "%v", err)
		}
	case c.BindPasswordEnv != "":
		if os.Getenv(c.BindPasswordEnv) == "" {
			bad("bindPasswordEnv", "environment variable %s is empty or not set", c.BindPasswordEnv)
		}
	}
	validDN := func(field, dn string, required bool) {
		if dn == "" {
			if required {
				bad(field, "required")
			}
			return
		}
		if _, err := goldap.ParseDN(dn); err != nil {
			bad(field, "%q is not a DN: %v", dn, err)
		}
	}
	validDN("userBaseDN", c.UserBaseDN, true)
	validDN("groupBaseDN", c.GroupBaseDN, false)
	if err := checkUserFilter(c.UserFilter); err != nil {
		bad("userFilter", "%v", err)
	}
	for field, v := range map[string]string{
		"usernameAttribute": c.UsernameAttribute, "uidAttribute": c.UIDAttribute,
		"groupNameAttribute": c.GroupNameAttribute,
	} {
		if !validAttributeName(v) {
			bad(field, "%q is not an attribute name", v)
		}
	}
	adMethods := []string{GroupMethodTokenGroups, GroupMethodInChain}
	ldapMethods := []string{GroupMethodMemberOf, GroupMethodGroupOfNames, GroupMethodGroupOfUniqueNames, GroupMethodPosixGroup}
	switch {
	case ad && !contains(adMethods, c.GroupMethod) && !contains(ldapMethods, c.GroupMethod):
		bad("groupMethod", "%q is not one of %s", c.GroupMethod, strings.Join(append(adMethods, ldapMethods...), ", "))
	case !ad && c.Type != "" && !contains(ldapMethods, c.GroupMethod):
		bad("groupMethod", "%q is not one of %s for type ldap", c.GroupMethod, strings.Join(ldapMethods, ", "))
	}
	if strings.ContainsAny(c.GroupPrefix, " \t\n") {
		bad("groupPrefix", "%q may not contain spaces", c.GroupPrefix)
	}
	for field, d := range map[string]Duration{"timeouts.dial": c.Timeouts.Dial, "timeouts.request": c.Timeouts.Request} {
		if v := time.Duration(d); v < minConfiguredTimeout || v > maxConfiguredTimeout {
			bad(field, "%s is outside %s..%s", v, minConfiguredTimeout, maxConfiguredTimeout)
		}
	}
	if c.PoolSize < 1 || c.PoolSize > maxPoolSize {
		bad("poolSize", "%d is outside 1..%d", c.PoolSize, maxPoolSize)
	}
	return errors.Join(errs...)
}

// bindPassword reads the service account's password from its file or environment variable.
func (c *Config) bindPassword() (string, error) {
	if c.BindPasswordEnv != "" {
		v := os.Getenv(c.BindPasswordEnv)
		if v == "" {
			return "", fmt.Errorf("bindPasswordEnv: %s is empty or not set", c.BindPasswordEnv)
		}
		return v, nil
	}
	b, err := os.ReadFile(c.BindPasswordFile)
	if err != nil {
		return "", fmt.Errorf("bindPasswordFile: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("bindPasswordFile: %s is empty", c.BindPasswordFile)
	}
	return pw, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
