package ldap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
)

// Conn is what a login needs from one LDAP connection (go-ldap's *Conn has it).
type Conn interface {
	Bind(username, password string) error
	Search(req *goldap.SearchRequest) (*goldap.SearchResult, error)
	SearchWithPaging(req *goldap.SearchRequest, pagingSize uint32) (*goldap.SearchResult, error)
	Close() error
	IsClosing() bool
}

// Dialer opens an unauthenticated connection to one URL, TLS already set up.
type Dialer interface {
	Dial(ctx context.Context, url string) (Conn, error)
}

// DialerFunc adapts a function to Dialer (handy in tests).
type DialerFunc func(ctx context.Context, url string) (Conn, error)

// Dial calls f.
func (f DialerFunc) Dial(ctx context.Context, url string) (Conn, error) { return f(ctx, url) }

// netDialer dials with go-ldap: ldaps:// directly over TLS, ldap:// with StartTLS when set.
type netDialer struct {
	tls            *tls.Config
	startTLS       bool
	dialTimeout    time.Duration
	requestTimeout time.Duration
}

func newNetDialer(cfg *Config) (*netDialer, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLSServerName}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("caFile: %s holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return &netDialer{
		tls: tc, startTLS: cfg.StartTLS,
		dialTimeout: time.Duration(cfg.Timeouts.Dial), requestTimeout: time.Duration(cfg.Timeouts.Request),
	}, nil
}

func (d *netDialer) Dial(ctx context.Context, rawURL string) (Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	tc := d.tls.Clone()
	if tc.ServerName == "" {
		tc.ServerName = u.Hostname()
	}
	timeout := d.dialTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	nd := &net.Dialer{Timeout: timeout}
	conn, err := goldap.DialURL(rawURL, goldap.DialWithDialer(nd), goldap.DialWithTLSConfig(tc))
	if err != nil {
		return nil, err
	}
	conn.SetTimeout(d.requestTimeout)
	if d.startTLS && u.Scheme == "ldap" {
		if err := conn.StartTLS(tc); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("StartTLS: %w", err)
		}
	}
	return conn, nil
}

// pool keeps service-bound connections. A connection that failed is closed, never reused; a
// new one is dialed with failover across the URLs in order.
type pool struct {
	dialer   Dialer
	urls     []string
	bindDN   string
	password func() (string, error)
	idle     chan Conn
	slots    chan struct{} // bounds the service connections in use at once
}

func newPool(d Dialer, urls []string, bindDN string, password func() (string, error), size int) *pool {
	return &pool{
		dialer: d, urls: urls, bindDN: bindDN, password: password,
		idle: make(chan Conn, size), slots: make(chan struct{}, size),
	}
}

// get returns a service-bound connection; call put when done.
func (p *pool) get(ctx context.Context) (Conn, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if c := p.takeIdle(); c != nil {
		return c, nil
	}
	c, err := p.dial(ctx)
	if err != nil {
		<-p.slots
		return nil, err
	}
	return c, nil
}

// takeIdle returns an idle connection that is still open, or nil.
func (p *pool) takeIdle() Conn {
	for {
		select {
		case c := <-p.idle:
			if !c.IsClosing() {
				return c
			}
			_ = c.Close()
		default:
			return nil
		}
	}
}

// put returns c to the pool, or closes it when it failed (broken connections are not kept).
func (p *pool) put(c Conn, failed bool) {
	defer func() { <-p.slots }()
	if failed || c.IsClosing() {
		_ = c.Close()
		return
	}
	select {
	case p.idle <- c:
	default:
		_ = c.Close()
	}
}

// dial connects to the first URL that answers and binds as the service account.
func (p *pool) dial(ctx context.Context) (Conn, error) {
	pw, err := p.password()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, u := range p.urls {
		c, err := p.dialer.Dial(ctx, u)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			continue
		}
		if err := c.Bind(p.bindDN, pw); err != nil {
			_ = c.Close()
			errs = append(errs, fmt.Errorf("%s: service bind as %s: %w", u, p.bindDN, err))
			continue
		}
		return c, nil
	}
	return nil, errors.Join(errs...)
}

// dialAny connects (without binding) to the first URL that answers.
func dialAny(ctx context.Context, d Dialer, urls []string) (Conn, string, error) {
	var errs []error
	for _, u := range urls {
		c, err := d.Dial(ctx, u)
		if err == nil {
			return c, u, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
	}
	return nil, "", errors.Join(errs...)
}

// close drains and closes the idle connections.
func (p *pool) close() {
	for {
		select {
		case c := <-p.idle:
			_ = c.Close()
		default:
			return
		}
	}
}
