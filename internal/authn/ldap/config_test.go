package ldap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func validConfig(t *testing.T) Config {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Config{
		Name: "corp", Type: TypeActiveDirectory, URLs: []string{"ldaps://dc1.corp.example.com:636"},
		BindDN: "svc@corp.example.com", BindPasswordFile: pw, UserBaseDN: "DC=corp,DC=example,DC=com",
	}
}

func TestConfigDefaults(t *testing.T) {
	c := validConfig(t)
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.UserFilter != DefaultADUserFilter || c.GroupMethod != GroupMethodTokenGroups || c.GroupPrefix != "corp:" ||
		c.UsernameAttribute != "sAMAccountName" || c.UIDAttribute != "objectGUID" || c.GroupBaseDN != c.UserBaseDN {
		t.Errorf("AD defaults: %+v", c)
	}
	l := validConfig(t)
	l.Type = TypeLDAP
	l.SetDefaults()
	if l.UserFilter != DefaultLDAPUserFilter || l.GroupMethod != GroupMethodMemberOf || l.UIDAttribute != "entryUUID" {
		t.Errorf("ldap defaults: %+v", l)
	}
	if pw, err := c.bindPassword(); err != nil || pw != "secret" {
		t.Errorf("bindPassword = %q, %v", pw, err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   []string // substrings of the error, each with its field path
	}{
		{"plain ldap refused", func(c *Config) { c.URLs = []string{"ldap://dc1:389"} }, []string{"urls[0]:", "clear"}},
		{"plain ldap allowed", func(c *Config) { c.URLs = []string{"ldap://127.0.0.1:389"}; c.InsecureAllowPlain = true }, nil},
		{"starttls", func(c *Config) { c.URLs = []string{"ldap://dc1:389"}; c.StartTLS = true }, nil},
		{"starttls on ldaps", func(c *Config) { c.StartTLS = true }, []string{"urls[0]: startTLS"}},
		{"bad scheme", func(c *Config) { c.URLs = []string{"http://dc1"} }, []string{"urls[0]: scheme"}},
		{"no url", func(c *Config) { c.URLs = nil }, []string{"urls: at least one"}},
		{"everything missing", func(c *Config) { *c = Config{} }, []string{"name: required", "type: required", "bindDN: required",
			"bindPasswordFile: one of", "userBaseDN: required"}},
		{"both password sources", func(c *Config) { c.BindPasswordEnv = "X" }, []string{"bindPasswordFile: set only one"}},
		{"missing password file", func(c *Config) { c.BindPasswordFile = "/nonexistent/pw" }, []string{"bindPasswordFile:"}},
		{"empty env", func(c *Config) { c.BindPasswordFile = ""; c.BindPasswordEnv = "KACCESS_SURELY_UNSET_VAR" }, []string{"bindPasswordEnv:"}},
		{"filter without placeholder", func(c *Config) { c.UserFilter = "(uid=alice)" }, []string{"userFilter:", "{0}"}},
		{"filter does not compile", func(c *Config) { c.UserFilter = "(uid={0}" }, []string{"userFilter:", "compile"}},
		{"bad base DN", func(c *Config) { c.UserBaseDN = "not a dn" }, []string{"userBaseDN:"}},
		{"ldap method on ldap", func(c *Config) { c.Type = TypeLDAP; c.GroupMethod = GroupMethodTokenGroups }, []string{"groupMethod:"}},
		{"unknown method", func(c *Config) { c.GroupMethod = "magic" }, []string{"groupMethod:"}},
		{"bad attribute", func(c *Config) { c.GroupNameAttribute = "cn)(x" }, []string{"groupNameAttribute:"}},
		{"bad name", func(c *Config) { c.Name = "co rp" }, []string{"name:"}},
		{"pool size", func(c *Config) { c.PoolSize = 1000 }, []string{"poolSize:"}},
		{"timeouts", func(c *Config) { c.Timeouts.Dial = -1 }, []string{"timeouts.dial:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			tt.change(&c)
			c.SetDefaults()
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
