package chdb

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/kaccess/kaccess/internal/audit/schema"
)

// Config configures the embedded store.
type Config struct {
	// Dir is the chDB data directory; created when missing. Required.
	Dir string
	// Library is the path of libchdb.so. Default: $CHDB_LIB_PATH, then DefaultLibrary.
	Library string
	// Helper is the path of the kaccess-chdb binary. Default: kaccess-chdb next to the running
	// executable, then on the PATH.
	Helper string
	// Database holds the audit tables (schema.Options.Database).
	Database string
	// Retention drops older events a day at a time; zero keeps them forever.
	Retention time.Duration
	// Logger receives helper restarts and its stderr; default slog.Default().
	Logger *slog.Logger
}

// DefaultLibrary is where libchdb.so is looked for when neither Config.Library nor
// CHDB_LIB_PATH says otherwise (chdb-go's own last resort).
const DefaultLibrary = "/usr/local/lib/libchdb.so"

// HelperName is the file name of the helper binary.
const HelperName = "kaccess-chdb"

// ErrNoLibrary is returned by Open when libchdb.so cannot be found.
var ErrNoLibrary = errors.New("the embedded audit store needs libchdb.so")

func (c Config) withDefaults() (Config, error) {
	if c.Dir == "" {
		return c, errors.New("chdb store: Dir (the data directory) is required")
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return c, fmt.Errorf("chdb store: data directory %s: %w", c.Dir, err)
	}
	c.Dir = dir
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Library == "" {
		c.Library = os.Getenv("CHDB_LIB_PATH")
	}
	if c.Library == "" {
		c.Library = DefaultLibrary
	}
	if st, err := os.Stat(c.Library); err != nil || st.IsDir() {
		return c, fmt.Errorf("%w, not found at %s: run `make chdb` (or hack/chdb.sh) in the kaccess source tree and set CHDB_LIB_PATH to the library it prints, "+
			"or install libchdb.so to %s, or configure a ClickHouse server for the audit log instead", ErrNoLibrary, c.Library, DefaultLibrary)
	}
	if c.Helper == "" {
		c.Helper, err = findHelper()
		if err != nil {
			return c, err
		}
	}
	if _, err := schemaOptions(c); err != nil {
		return c, err
	}
	return c, nil
}

func schemaOptions(c Config) (schema.Options, error) {
	o := schema.Options{Database: c.Database, Retention: c.Retention}
	if _, err := schema.Migrations(o); err != nil { // validates the options
		return o, fmt.Errorf("chdb store: %w", err)
	}
	if o.Database == "" {
		o.Database = schema.DefaultDatabase
	}
	return o, nil
}

// findHelper looks next to the running binary first, so an installed gateway uses the helper
// it was shipped with, not whatever the PATH holds.
func findHelper() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), HelperName)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath(HelperName)
	if err != nil {
		return "", fmt.Errorf("chdb store: the helper binary %s is neither next to this executable nor on the PATH: "+
			"install it with the gateway (make build puts it in bin/) or set its path in the configuration", HelperName)
	}
	return p, nil
}

// Check reports what Open would refuse before starting anything: a missing libchdb.so or helper,
// or bad options. The gateway calls it at start, so a missing engine is a clear configuration
// error rather than a store that never comes up.
func Check(cfg Config) error {
	_, err := cfg.withDefaults()
	return err
}
