package clickhouse

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kaccess/kaccess/internal/audit/schema"
)

// Config says which ClickHouse server to write to and how.
type Config struct {
	// Addresses are host:port of the native protocol (9000, or 9440 with TLS). With several,
	// a connection goes to the first that answers, in order: the others are failover.
	Addresses []string
	// Database holds the audit tables; default "kaccess" (schema.DefaultDatabase), created
	// by the migration when missing.
	Database string
	// Table is the table written and read; default "audit_events" (schema.Table). Another name
	// only makes sense with SkipMigrate, for a table made by hand.
	Table string
	// Username and Password authenticate; Username defaults to "default". The caller reads
	// the password from a file; it is never logged nor put in an error.
	Username string
	Password string
	// TLS, when set, encrypts the connection. CAFile is a shortcut: a PEM bundle of the CAs
	// to trust, for a TLS config built here (TLS wins when both are set).
	TLS    *tls.Config
	CAFile string
	// Compression of the blocks sent: "lz4" (default), "zstd" or "none".
	Compression string
	// DialTimeout bounds the connect to one address; default 5s. With every address down a
	// Write fails after at most this long per address, so an outage shows promptly.
	DialTimeout time.Duration
	// ReadTimeout bounds waiting for the server once a query is sent; default 60s.
	ReadTimeout time.Duration
	// MaxOpenConns caps the connection pool; default 4 (a writer sends one batch at a time).
	MaxOpenConns int
	// Cluster, when set, names the ClickHouse cluster for the clustered schema
	// (ReplicatedMergeTree + Distributed, DDL ON CLUSTER); Table is then the Distributed one.
	Cluster string
	// Retention drops events older than this, a whole day at a time; zero keeps them.
	Retention time.Duration
	// SkipMigrate leaves the schema alone: the table must exist. Servers too old for the
	// production schema (before 22.2) are never migrated.
	SkipMigrate bool
}

// The defaults of Config.
const (
	DefaultDatabase     = schema.DefaultDatabase
	DefaultTable        = schema.Table
	DefaultUsername     = "default"
	DefaultCompression  = "lz4"
	DefaultDialTimeout  = 5 * time.Second
	DefaultReadTimeout  = 60 * time.Second
	DefaultMaxOpenConns = 4
)

// withDefaults returns cfg with the empty fields set to their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.Username == "" {
		cfg.Username = DefaultUsername
	}
	if cfg.Compression == "" {
		cfg.Compression = DefaultCompression
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.MaxOpenConns == 0 {
		cfg.MaxOpenConns = DefaultMaxOpenConns
	}
	return cfg
}

// validate returns every problem of a defaulted cfg at once, each with its field.
func (cfg Config) validate() error {
	var errs []error
	if len(cfg.Addresses) == 0 {
		errs = append(errs, errors.New("addresses: at least one host:port of the native protocol is needed"))
	}
	for i, a := range cfg.Addresses {
		if host, port, ok := strings.Cut(a, ":"); !ok || host == "" || port == "" {
			errs = append(errs, fmt.Errorf("addresses[%d]: %q is not host:port", i, a))
		}
	}
	for field, name := range map[string]string{"database": cfg.Database, "table": cfg.Table} {
		if !isIdentifier(name) {
			errs = append(errs, fmt.Errorf("%s: %q: use letters, digits and _ only", field, name))
		}
	}
	if cfg.Table != schema.Table && !cfg.SkipMigrate {
		errs = append(errs, fmt.Errorf("table: %q: the migration creates %s; another table needs skipMigrate", cfg.Table, schema.Table))
	}
	switch cfg.Compression {
	case "lz4", "zstd", "none":
	default:
		errs = append(errs, fmt.Errorf("compression: %q: use lz4, zstd or none", cfg.Compression))
	}
	if cfg.DialTimeout < 0 || cfg.ReadTimeout < 0 || cfg.Retention < 0 {
		errs = append(errs, errors.New("dialTimeout, readTimeout, retention: must not be negative"))
	}
	if cfg.MaxOpenConns < 0 {
		errs = append(errs, errors.New("maxOpenConns: must not be negative"))
	}
	return errors.Join(errs...)
}

// tlsConfig returns the TLS config to use, nil for plain connections.
func (cfg Config) tlsConfig() (*tls.Config, error) {
	if cfg.TLS != nil {
		return cfg.TLS, nil
	}
	if cfg.CAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("caFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("caFile: %s holds no PEM certificate", cfg.CAFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// isIdentifier reports whether s can be put into SQL unquoted: the names in Config come from
// the operator's config, but SQL built from them must not depend on that.
func isIdentifier(s string) bool {
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return s != ""
}
