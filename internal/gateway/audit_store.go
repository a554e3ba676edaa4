package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"strings"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/clickhouse"
	"github.com/kaccess/kaccess/internal/audit/schema"
	"github.com/kaccess/kaccess/internal/audit/ship"
)

// configuredStore returns how to reach the configured audit store: a ClickHouse server when
// audit.clickhouse is set, the embedded engine otherwise. What can be checked without
// connecting (the password file, the embedded engine's library and helper) is checked now,
// so a broken setup fails at start with a message instead of spooling forever.
func (g *Gateway) configuredStore() (StoreOpener, error) {
	ac := g.cfg.Audit
	if ch := ac.ClickHouse; ch != nil {
		cfg := clickhouse.Config{
			Addresses: ch.Addresses, Database: ch.Database, Username: ch.Username,
			CAFile: ch.CAFile, Cluster: ch.Cluster, Retention: ac.Retention.D(),
		}
		if ch.PasswordFile != "" {
			pw, err := os.ReadFile(ch.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("audit.clickhouse.passwordFile: %w", err)
			}
			cfg.Password = strings.TrimRight(string(pw), "\r\n")
		}
		if ch.TLS && cfg.CAFile == "" {
			cfg.TLS = systemTLS()
		}
		return func(ctx context.Context) (ship.Sink, error) {
			return clickhouse.Open(ctx, cfg)
		}, nil
	}
	cfg := chdb.Config{
		Dir: ac.Embedded.Dir, Library: ac.Embedded.Library, Helper: ac.Embedded.Helper,
		Retention: ac.Retention.D(), Logger: g.log,
	}
	if err := chdb.Check(cfg); err != nil {
		return nil, fmt.Errorf("audit store: %w", err)
	}
	return func(ctx context.Context) (ship.Sink, error) {
		return chdb.Open(ctx, cfg)
	}, nil
}

// systemTLS is TLS to a ClickHouse server whose certificate the system roots vouch for.
func systemTLS() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12} }

// auditDatabase is the database holding the audit tables.
func (g *Gateway) auditDatabase() string {
	if ch := g.cfg.Audit.ClickHouse; ch != nil && ch.Database != "" {
		return ch.Database
	}
	return schema.DefaultDatabase
}
