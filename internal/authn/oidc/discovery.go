package oidc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/time/rate"
)

// issuer is one configured provider; its verifier exists once discovery has succeeded.
type issuer struct {
	cfg     *Config
	client  *http.Client // discovery
	keys    *http.Client // JWKS: rate-limited, see limitedTransport
	log     *slog.Logger
	now     func() time.Time
	retry   time.Duration
	timeout time.Duration

	verifier atomic.Pointer[gooidc.IDTokenVerifier]
	// discovering holds one token while a discovery request is in flight; a request that finds
	// it taken waits for it (within its own context) rather than asking again.
	discovering chan struct{}
	mu          sync.Mutex // guards lastAttempt and lastErr
	lastAttempt time.Time
	lastErr     error
}

func newIssuer(cfg *Config, opts Options) (*issuer, error) {
	client, err := httpClient(cfg, opts.HTTPTimeout)
	if err != nil {
		return nil, err
	}
	keys := *client
	keys.Transport = &limitedTransport{
		next:    client.Transport,
		limiter: rate.NewLimiter(rate.Every(opts.JWKSRefetchInterval), jwksRefetchBurst),
		now:     opts.Now,
	}
	return &issuer{
		cfg: cfg, client: client, keys: &keys, now: opts.Now, retry: opts.DiscoveryRetry, timeout: opts.HTTPTimeout,
		log:         opts.Logger.With("source", cfg.Source(), "issuer", cfg.IssuerURL),
		discovering: make(chan struct{}, 1),
	}, nil
}

// discoverInBackground retries discovery with backoff until it succeeds or ctx ends.
func (i *issuer) discoverInBackground(ctx context.Context) {
	backoff := time.Second
	for {
		if _, err := i.discover(ctx, true); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackgroundRetry)
	}
}

// discover returns the verifier, reading the discovery document first if that has not
// succeeded yet. Unless force, it does not ask again within i.retry of the last failure and
// returns that failure instead: a provider that is down is not asked once per request.
func (i *issuer) discover(ctx context.Context, force bool) (*gooidc.IDTokenVerifier, error) {
	if v := i.verifier.Load(); v != nil {
		return v, nil
	}
	select {
	case i.discovering <- struct{}{}:
		defer func() { <-i.discovering }()
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for discovery of %s: %w", i.cfg.IssuerURL, ctx.Err())
	}
	if v := i.verifier.Load(); v != nil { // found by the discovery we waited for
		return v, nil
	}
	now := i.now()
	i.mu.Lock()
	if !force && i.lastErr != nil && now.Sub(i.lastAttempt) < i.retry {
		err := i.lastErr
		i.mu.Unlock()
		return nil, err
	}
	i.lastAttempt = now
	hadFailed := i.lastErr != nil
	i.mu.Unlock()

	v, err := i.newVerifier(ctx)
	i.mu.Lock()
	defer i.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("discovery of %s: %w", i.cfg.IssuerURL, err)
		if !hadFailed {
			i.log.Warn("OIDC discovery failed; retrying", "error", err)
		} else {
			i.log.Debug("OIDC discovery failed again", "error", err)
		}
		i.lastErr = err
		return nil, err
	}
	if hadFailed {
		i.log.Info("OIDC provider reachable again")
	}
	i.lastErr = nil
	i.verifier.Store(v)
	return v, nil
}

func (i *issuer) newVerifier(ctx context.Context) (*gooidc.IDTokenVerifier, error) {
	dctx, cancel := context.WithTimeout(gooidc.ClientContext(ctx, i.client), i.timeout)
	defer cancel()
	p, err := gooidc.NewProvider(dctx, i.cfg.IssuerURL)
	if err != nil {
		return nil, err
	}
	var meta struct {
		JWKSURL string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil {
		return nil, err
	}
	if meta.JWKSURL == "" {
		return nil, errors.New("the discovery document has no jwks_uri")
	}
	// go-oidc's RemoteKeySet fetches the keys on first use and again whenever no cached key
	// verifies a token (a new kid): a provider's key rotation needs no restart.
	keys := gooidc.NewRemoteKeySet(gooidc.ClientContext(context.Background(), i.keys), meta.JWKSURL)
	return gooidc.NewVerifier(i.cfg.IssuerURL, &observedKeySet{keys: keys}, &gooidc.Config{
		// Audience and expiry are checked by issuer.identity: several client IDs, and a skew.
		SkipClientIDCheck:    true,
		SkipExpiryCheck:      true,
		SupportedSigningAlgs: i.cfg.SigningAlgs,
	}), nil
}

// jwksRefetchBurst is how many key-set fetches may happen back to back (the first fetch, a
// rotation, a few forged tokens) before JWKSRefetchInterval applies. At 3, a discovery racing
// the first request could leave no fetch for a real rotation; seen under -race.
const jwksRefetchBurst = 5

// errJWKSRateLimited is returned instead of fetching the key set too often.
var errJWKSRateLimited = errors.New("key set fetched too recently; not fetched again yet")

// limitedTransport bounds how often the key set is fetched. go-oidc refetches whenever no
// cached key verifies a token, so without a bound every forged token (random kid, or a bad
// signature) of a configured issuer would cost a request to the provider.
type limitedTransport struct {
	next    http.RoundTripper
	limiter *rate.Limiter
	now     func() time.Time
}

func (t *limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.limiter.AllowN(t.now(), 1) {
		return nil, errJWKSRateLimited
	}
	return t.next.RoundTrip(req)
}

// httpClient trusts cfg.CAFile's CAs, or the system roots.
func httpClient(cfg *Config, timeout time.Duration) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}
