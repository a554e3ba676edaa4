package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kaccess/kaccess/internal/authn/oidc"
)

// FieldError is one problem in the file, at a field path such as clusters[1].server.
type FieldError struct {
	Path    string
	Problem string
}

func (e FieldError) Error() string { return e.Path + ": " + e.Problem }

// ValidationError lists every problem found, so they can all be fixed in one pass.
type ValidationError struct {
	Problems []FieldError
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid config (%d problems):", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.Error())
	}
	return b.String()
}

type problems []FieldError

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, FieldError{Path: path, Problem: fmt.Sprintf(format, args...)})
}

var clusterName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// Validate checks the whole configuration and returns a *ValidationError listing every problem.
func (c *Config) Validate() error {
	var p problems
	checkAddress(&p, "listen.address", c.Listen.Address, true)
	checkAddress(&p, "listen.opsAddress", c.Listen.OpsAddress, false)
	if c.Listen.OpsAddress != "" && c.Listen.OpsAddress == c.Listen.Address && !strings.HasSuffix(c.Listen.Address, ":0") {
		p.add("listen.opsAddress", "must differ from listen.address (%q)", c.Listen.Address)
	}
	if c.Listen.Pprof && c.Listen.OpsAddress == "" {
		p.add("listen.pprof", "needs listen.opsAddress: profiles are served on the ops listener only")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		p.add("tls", "set both certFile and keyFile, or neither to have a certificate generated in stateDir")
	}
	if c.StateDir == "" {
		p.add("stateDir", "required: the gateway keeps its generated CA and keys there")
	}
	c.validateClusters(&p)
	c.validateSession(&p)
	c.validateDirectories(&p)
	c.validateOIDC(&p)
	c.Audit.validate(&p)
	c.Access.validate(&p)
	c.Detections.validate(&p)
	c.Alerting.validate(&p, &c.Detections)
	if c.Limits.MaxHeaderBytes < 4<<10 {
		p.add("limits.maxHeaderBytes", "must be at least 4096, got %d", c.Limits.MaxHeaderBytes)
	}
	if c.Limits.MaxBodyBytes < 1<<10 {
		p.add("limits.maxBodyBytes", "must be at least 1024, got %d", c.Limits.MaxBodyBytes)
	}
	for name, d := range map[string]Duration{
		"timeouts.request": c.Timeouts.Request, "timeouts.readHeader": c.Timeouts.ReadHeader,
		"timeouts.idle": c.Timeouts.Idle, "timeouts.upstreamDial": c.Timeouts.UpstreamDial,
		"timeouts.shutdownDrain": c.Timeouts.ShutdownDrain,
	} {
		if d < 0 {
			p.add(name, "must not be negative, got %s", d.D())
		}
	}
	for i, cidr := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			p.add(fmt.Sprintf("trustedProxies[%d]", i), "not a CIDR such as 10.0.0.0/8: %q", cidr)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", "must be one of debug, info, warn, error; got %q", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		p.add("log.format", "must be json or text; got %q", c.Log.Format)
	}
	if len(p) == 0 {
		return nil
	}
	sortProblems(p)
	return &ValidationError{Problems: p}
}

func (c *Config) validateClusters(p *problems) {
	if len(c.Clusters) == 0 {
		p.add("clusters", "at least one cluster is required")
	}
	seen := map[string]int{}
	defaults := 0
	for i, cl := range c.Clusters {
		path := fmt.Sprintf("clusters[%d]", i)
		if !clusterName.MatchString(cl.Name) {
			p.add(path+".name", "must be a DNS label (lowercase letters, digits, '-'), got %q", cl.Name)
		} else if j, dup := seen[cl.Name]; dup {
			p.add(path+".name", "%q is already used by clusters[%d]", cl.Name, j)
		}
		seen[cl.Name] = i
		if cl.Default {
			defaults++
		}
		sources := 0
		for _, set := range []bool{cl.Kubeconfig != "", cl.TokenFile != "", cl.InCluster} {
			if set {
				sources++
			}
		}
		switch {
		case sources == 0:
			p.add(path, "set one credential source: kubeconfig, tokenFile (with server) or inCluster")
		case sources > 1:
			p.add(path, "set only one credential source of kubeconfig, tokenFile and inCluster")
		}
		if cl.TokenFile != "" && cl.Server == "" {
			p.add(path+".server", "required with tokenFile")
		}
		if cl.Context != "" && cl.Kubeconfig == "" {
			p.add(path+".context", "only meaningful with kubeconfig")
		}
		if cl.Server != "" {
			u, err := url.Parse(cl.Server)
			switch {
			case err != nil:
				p.add(path+".server", "not a URL: %v", err)
			case u.Scheme != "https":
				p.add(path+".server", "must be an https:// URL, got %q", cl.Server)
			case u.Host == "":
				p.add(path+".server", "has no host: %q", cl.Server)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(cl.Labels)) {
			lp := fmt.Sprintf("%s.labels[%s]", path, k)
			if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
				p.add(lp, "%q is not a label key: %s", k, strings.Join(msgs, "; "))
			}
			if msgs := validation.IsValidLabelValue(cl.Labels[k]); len(msgs) > 0 {
				p.add(lp, "%q is not a label value: %s", cl.Labels[k], strings.Join(msgs, "; "))
			}
		}
	}
	if defaults > 1 {
		p.add("clusters", "only one cluster may be default, %d are", defaults)
	}
}

func (c *Config) validateDirectories(p *problems) {
	seen := map[string]int{}
	for i, d := range c.Directories {
		path := fmt.Sprintf("directories[%d]", i)
		if !clusterName.MatchString(d.Name) {
			p.add(path+".name", "must be lowercase letters, digits and '-' (people type it: kaccess login --source NAME), got %q", d.Name)
		} else if j, dup := seen[d.Name]; dup {
			p.add(path+".name", "%q is already used by directories[%d]", d.Name, j)
		}
		seen[d.Name] = i
		err := d.Validate()
		if err == nil {
			continue
		}
		var errs []error
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			errs = joined.Unwrap()
		} else {
			errs = []error{err}
		}
		for _, e := range errs {
			field, problem, ok := strings.Cut(e.Error(), ": ")
			if !ok {
				field, problem = "", e.Error()
			}
			if field != "" && field != "name" {
				p.add(path+"."+field, "%s", problem)
			} else if field == "" {
				p.add(path, "%s", problem)
			}
		}
	}
}

func (c *Config) validateOIDC(p *problems) {
	for _, e := range flatten(oidc.ValidateAll(c.OIDC)) {
		if path, problem, ok := strings.Cut(e.Error(), ": "); ok {
			p.add(path, "%s", problem)
		} else {
			p.add("oidc", "%s", e.Error())
		}
	}
	dirs := map[string]bool{}
	for _, d := range c.Directories {
		dirs[d.Name] = true
	}
	for i, o := range c.OIDC {
		if !clusterName.MatchString(o.Name) {
			p.add(fmt.Sprintf("oidc[%d].name", i), "must be lowercase letters, digits and '-' (people type it: kaccess login --source NAME), got %q", o.Name)
		}
		if dirs[o.Name] {
			p.add(fmt.Sprintf("oidc[%d].name", i), "%q is also a directory's name; login sources need distinct names", o.Name)
		}
	}
}

// flatten unpacks errors.Join trees into their leaves.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range joined.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

func (c *Config) validateSession(p *problems) {
	ttl := c.Session.TTL.D()
	if ttl < time.Minute || ttl > 24*time.Hour {
		p.add("session.ttl", "must be between 1m and 24h (session tokens are short-lived), got %s", ttl)
	}
	if r := c.Session.RotateEvery.D(); r != 0 && r < time.Hour {
		p.add("session.rotateEvery", "must be 0 (off) or at least 1h, got %s", r)
	}
	if c.Session.Issuer == "" {
		p.add("session.issuer", "required")
	}
	if r := c.Session.Revocations; r != "" {
		ns, name, ok := strings.Cut(r, "/")
		if !ok || !clusterName.MatchString(ns) || !clusterName.MatchString(name) {
			p.add("session.revocations", "want a ConfigMap as namespace/name, e.g. kaccess-system/kaccess-revocations; got %q", r)
		}
	}
}

func checkAddress(p *problems, path, addr string, required bool) {
	if addr == "" {
		if required {
			p.add(path, "required, e.g. \":6443\"")
		}
		return
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		p.add(path, "must be host:port such as \":6443\" or \"127.0.0.1:6443\", got %q", addr)
	}
}

// sortProblems keeps the report stable for people and tests (map iteration above is random).
func sortProblems(p problems) {
	slices.SortStableFunc(p, func(a, b FieldError) int { return strings.Compare(a.Path, b.Path) })
}

// AsValidationError reports whether err lists configuration problems.
func AsValidationError(err error) (*ValidationError, bool) {
	var v *ValidationError
	ok := errors.As(err, &v)
	return v, ok
}
