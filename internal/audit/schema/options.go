package schema

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Options select the variant of the schema.
type Options struct {
	// Database holds the audit tables; created when missing. Default "kaccess".
	Database string
	// Cluster, when set, selects the clustered variant: every statement runs ON CLUSTER, each
	// node holds a ReplicatedMergeTree (LocalTable) and Table is a Distributed table over them.
	Cluster string
	// Retention drops events older than this, a whole day at a time. Zero keeps them forever.
	Retention time.Duration
}

// DefaultDatabase is the database used when Options.Database is empty.
const DefaultDatabase = "kaccess"

var (
	identRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	clusterRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)
)

// withDefaults returns opts with defaults filled in, or every problem found at once.
func (o Options) withDefaults() (Options, error) {
	if o.Database == "" {
		o.Database = DefaultDatabase
	}
	var errs []error
	if !identRE.MatchString(o.Database) {
		errs = append(errs, fmt.Errorf("database %q: use letters, digits and underscores, not starting with a digit", o.Database))
	}
	if o.Cluster != "" && !clusterRE.MatchString(o.Cluster) {
		errs = append(errs, fmt.Errorf("cluster %q: use letters, digits, '_', '.' and '-' as in the server's remote_servers", o.Cluster))
	}
	if o.Retention < 0 {
		errs = append(errs, fmt.Errorf("retention %s: must be zero (keep forever) or positive", o.Retention))
	}
	return o, errors.Join(errs...)
}

// RetentionDays is the retention rounded up to whole days, the unit parts are dropped in
// (partitions are daily); 0 means no TTL.
func (o Options) RetentionDays() int {
	if o.Retention <= 0 {
		return 0
	}
	return int((o.Retention + 24*time.Hour - 1) / (24 * time.Hour))
}

// onCluster is the ON CLUSTER clause of the clustered variant, empty otherwise.
func (o Options) onCluster() string {
	if o.Cluster == "" {
		return ""
	}
	return " ON CLUSTER " + quote(o.Cluster)
}

// quote returns a backquoted identifier. Names are validated first; quoting keeps cluster names
// with '-' or '.' valid SQL.
func quote(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}

// table returns db.name, quoted.
func (o Options) table(name string) string { return quote(o.Database) + "." + quote(name) }

// StringLiteral returns s as a ClickHouse string literal. Control bytes are escaped too: a NUL
// would end the query early where it is passed as a C string (chDB), and a newline would make
// the literal hard to read in logs.
func StringLiteral(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' || c == '\'':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\x%02X`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}
