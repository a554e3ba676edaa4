package session

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"k8s.io/utils/clock"
)

const (
	DefaultTTL       = 8 * time.Hour
	MaxTTL           = 24 * time.Hour
	DefaultCacheSize = 10000
	DefaultLeeway    = 30 * time.Second
	// MaxLeeway bounds clock skew tolerance; more would quietly extend every
	// token's life and delay revocation cleanup.
	MaxLeeway = 5 * time.Minute
	// MinRotateEvery: rotating more often only multiplies the keys that must
	// be kept for TTL after they stop signing.
	MinRotateEvery = time.Hour
)

// Config configures a Manager. Zero values get the documented defaults.
type Config struct {
	// Issuer is the iss claim; tokens with another issuer are ErrNotSession.
	Issuer string
	// KeysDir holds the signing keys as <kid>.pem (PKCS#8, mode 0600).
	KeysDir string
	// TTL of minted tokens: default 8h, at most 24h.
	TTL time.Duration
	// RotateEvery makes Run rotate the signing key this often; 0 = never.
	RotateEvery time.Duration
	// Clock is the source of "now"; default real time.
	Clock clock.PassiveClock
	// Revocations stores revoked session ids; default in-memory.
	Revocations RevocationStore
	// CacheSize bounds the verification cache: default 10000, negative
	// disables caching.
	CacheSize int
	// Leeway tolerated for clock skew on nbf/exp: default 30s.
	Leeway time.Duration
	// Logger for background rotation and reloads; default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of c with defaults filled in.
func (c Config) withDefaults() Config {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Revocations == nil {
		c.Revocations = NewMemoryRevocationStore(c.Clock)
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.Leeway == 0 {
		c.Leeway = DefaultLeeway
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate reports every problem at once, each with its field path.
func (c Config) validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("session.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch {
	case c.Issuer == "":
		add("issuer", "required")
	case strings.TrimSpace(c.Issuer) != c.Issuer:
		add("issuer", "must not have leading or trailing spaces")
	}
	if c.KeysDir == "" {
		add("keysDir", "required")
	}
	if c.TTL < 0 || c.TTL > MaxTTL {
		add("ttl", "%s is outside (0, %s]", c.TTL, MaxTTL)
	}
	if c.RotateEvery < 0 || (c.RotateEvery > 0 && c.RotateEvery < MinRotateEvery) {
		add("rotateEvery", "%s must be 0 (never) or at least %s", c.RotateEvery, MinRotateEvery)
	}
	if c.Leeway < 0 || c.Leeway > MaxLeeway {
		add("leeway", "%s is outside [0, %s]", c.Leeway, MaxLeeway)
	}
	return errors.Join(errs...)
}
