package session

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	valid := Config{Issuer: testIssuer, KeysDir: "/unused"}
	tests := []struct {
		name string
		mod  func(*Config)
		want []string // every one must be in the error; none = valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"everything missing", func(c *Config) { *c = Config{} }, []string{"session.issuer: required", "session.keysDir: required"}},
		{"issuer with spaces", func(c *Config) { c.Issuer = " x" }, []string{"session.issuer"}},
		{"TTL too long", func(c *Config) { c.TTL = 25 * time.Hour }, []string{"session.ttl"}},
		{"TTL negative", func(c *Config) { c.TTL = -time.Hour }, []string{"session.ttl"}},
		{"TTL at max", func(c *Config) { c.TTL = MaxTTL }, nil},
		{"rotate too often", func(c *Config) { c.RotateEvery = time.Minute }, []string{"session.rotateEvery"}},
		{"rotate negative", func(c *Config) { c.RotateEvery = -time.Hour }, []string{"session.rotateEvery"}},
		{"leeway negative", func(c *Config) { c.Leeway = -time.Second }, []string{"session.leeway"}},
		{"leeway too large", func(c *Config) { c.Leeway = time.Hour }, []string{"session.leeway"}},
		{"all at once", func(c *Config) {
			c.Issuer, c.TTL, c.Leeway = "", 48*time.Hour, -1
		}, []string{"session.issuer", "session.ttl", "session.leeway"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid
			tt.mod(&c)
			err := c.withDefaults().validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate passed, want %v", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	if _, err := NewManager(Config{}); err == nil {
		t.Error("NewManager accepted an empty config")
	}
}
