package clickhouse

import (
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
)

// options turns a defaulted, valid Config into clickhouse-go's options.
func (cfg Config) options() (*ch.Options, error) {
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	method := map[string]ch.CompressionMethod{
		"lz4": ch.CompressionLZ4, "zstd": ch.CompressionZSTD, "none": ch.CompressionNone,
	}[cfg.Compression]
	return &ch.Options{
		Protocol: ch.Native,
		Addr:     cfg.Addresses,
		// No default database: the migration creates cfg.Database, which a connection
		// naming it could not wait for; every statement names its database instead.
		Auth: ch.Auth{Username: cfg.Username, Password: cfg.Password},
		TLS:  tlsCfg,
		// In order: the first address is the primary, the others take over while it is down.
		ConnOpenStrategy: ch.ConnOpenInOrder,
		Compression:      &ch.Compression{Method: method},
		DialTimeout:      cfg.DialTimeout,
		ReadTimeout:      cfg.ReadTimeout,
		MaxOpenConns:     cfg.MaxOpenConns,
		MaxIdleConns:     cfg.MaxOpenConns,
		// Short-lived connections: after a failover the pool goes back to the primary soon.
		ConnMaxLifetime: 10 * time.Minute,
	}, nil
}
