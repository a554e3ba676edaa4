package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The example OpenID provider's fixed clients and users (hack/oidc-provider, which runs
// zitadel/oidc's example/server/exampleop with its in-memory storage).
const (
	// OIDCClientID and OIDCOtherClientID are public (native) clients: authorization code with
	// PKCE, no secret, refresh tokens, any http://127.0.0.1:<port>/callback redirect.
	OIDCClientID      = "native"
	OIDCOtherClientID = "other"
	// OIDCWebClientID is a confidential client (secret OIDCClientSecret).
	OIDCWebClientID = "web"
	// OIDCDeviceClientID may use the device authorization grant (secret OIDCClientSecret).
	OIDCDeviceClientID = "device"
	OIDCClientSecret   = "secret"
	// OIDCRedirectPath is the path of the loopback redirect URI registered for the clients.
	OIDCRedirectPath = "/callback"
)

// OIDCUser is a user of the example provider.
type OIDCUser struct {
	Username string // what the login form takes
	Password string
	Subject  string // the "sub" claim
	Email    string // the "email" claim (email_verified true)
	Groups   []string
}

// OIDCProviderConfig says where the provider runs.
type OIDCProviderConfig struct {
	// Dir holds the TLS files and oidc-provider.log; a temp dir, removed by Stop, if empty.
	Dir string
	// BinDir holds oidc-provider; default $KACCESS_BIN_DIR, else <repo root>/bin.
	BinDir string
	// Port is the HTTPS port on 127.0.0.1; 0 picks a free one.
	Port int
	// Stdout and Stderr receive the provider's log; default oidc-provider.log in Dir.
	Stdout, Stderr io.Writer
}

// OIDCProvider is a running example OpenID provider on https://127.0.0.1:<port>/. It serves
// discovery, JWKS, authorization code with PKCE, refresh tokens and device authorization,
// and adds an email and a groups claim to ID tokens (the example storage has neither).
type OIDCProvider struct {
	// Issuer is the "iss" of its tokens, with the trailing slash: https://127.0.0.1:port/
	Issuer      string
	CAFile      string
	CAData      []byte
	Dir         string
	StartupTime time.Duration
	// Users are the example's two users; User and User2 are shortcuts.
	Users       []OIDCUser
	User, User2 OIDCUser

	discovery oidcDiscovery
	client    *http.Client
	stopMu    sync.Mutex
	proc      *process
	run       *processSpec // how to start it again on the same address (StartServer)
	tlsConfig *tls.Config
	removeDir bool
}

type oidcDiscovery struct {
	Issuer                      string `json:"issuer"`
	AuthorizationEndpoint       string `json:"authorization_endpoint"`
	TokenEndpoint               string `json:"token_endpoint"`
	JWKSURI                     string `json:"jwks_uri"`
	DeviceAuthorizationEndpoint string `json:"device_authorization_endpoint"`
}

// StartOIDCProvider starts bin/oidc-provider (built from hack/oidc-provider) with a fresh
// serving certificate and waits until its discovery document answers. ctx bounds the start.
func StartOIDCProvider(ctx context.Context, cfg OIDCProviderConfig) (*OIDCProvider, error) {
	started := time.Now()
	binDir := cfg.BinDir
	if binDir == "" {
		binDir = os.Getenv(BinDirEnv)
	}
	if binDir == "" {
		root, err := repoRoot()
		if err != nil {
			return nil, fmt.Errorf("find bin dir: %w (set %s or OIDCProviderConfig.BinDir)", err, BinDirEnv)
		}
		binDir = filepath.Join(root, "bin")
	}
	bin := filepath.Join(binDir, "oidc-provider")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("missing oidc-provider binary: %w (build it: cd hack/oidc-provider && go build -o ../../bin/oidc-provider .)", err)
	}
	p := &OIDCProvider{Dir: cfg.Dir}
	if p.Dir == "" {
		dir, err := os.MkdirTemp("", "kaccess-testenv-oidc-")
		if err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
		p.Dir, p.removeDir = dir, true
	} else if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	err := startPickingPorts(cfg.Port != 0, func() error { return p.start(ctx, cfg, bin) }, p.stopProcess)
	if err != nil {
		_ = p.Stop()
		return nil, err
	}
	p.StartupTime = time.Since(started)
	return p, nil
}

func (p *OIDCProvider) start(ctx context.Context, cfg OIDCProviderConfig, bin string) error {
	port := cfg.Port
	if port == 0 {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		port = ports[0]
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p.Issuer = "https://" + addr + "/"
	caPEM, certPEM, keyPEM, err := servingCert()
	if err != nil {
		return err
	}
	p.CAData, p.CAFile = caPEM, filepath.Join(p.Dir, "ca.crt")
	certFile, keyFile := filepath.Join(p.Dir, "tls.crt"), filepath.Join(p.Dir, "tls.key")
	for path, data := range map[string][]byte{p.CAFile: caPEM, certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	p.client = &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Proxy: nil},
	}
	// The example names its first user after the issuer's host.
	p.User = OIDCUser{Username: "test-user@127.0.0.1", Password: "verysecure", Subject: "id1",
		Email: "test-user@zitadel.ch", Groups: []string{"admins", "developers"}}
	p.User2 = OIDCUser{Username: "test-user2", Password: "verysecure", Subject: "id2",
		Email: "test-user2@zitadel.ch", Groups: []string{"developers"}}
	p.Users = []OIDCUser{p.User, p.User2}

	p.run = &processSpec{name: "oidc-provider", bin: bin, args: []string{
		"-addr", addr, "-issuer", p.Issuer, "-tls-cert", certFile, "-tls-key", keyFile,
		"-redirect-uris", "http://127.0.0.1" + OIDCRedirectPath,
	}, stdout: cfg.Stdout, stderr: cfg.Stderr, logPath: filepath.Join(p.Dir, "oidc-provider.log")}
	p.tlsConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if err := p.startProcess(ctx); err != nil {
		return err
	}
	discoveryURL := p.Issuer + ".well-known/openid-configuration"
	if err := p.getJSON(ctx, discoveryURL, &p.discovery); err != nil {
		return fmt.Errorf("read discovery: %w", err)
	}
	if p.discovery.Issuer != p.Issuer {
		return fmt.Errorf("discovery names issuer %q, want %q", p.discovery.Issuer, p.Issuer)
	}
	return nil
}

// HTTPClient returns a client that trusts the provider's CA.
func (p *OIDCProvider) HTTPClient() *http.Client { return p.client }

// RotateKeys makes the provider sign with a new key from now on; earlier keys stay in its
// JWKS (as in a real rollover). It returns the new key id.
func (p *OIDCProvider) RotateKeys(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Issuer+"test/rotate-keys", nil)
	if err != nil {
		return "", err
	}
	var out struct {
		Kid string `json:"kid"`
	}
	if err := p.doJSON(req, &out); err != nil {
		return "", fmt.Errorf("rotate keys: %w", err)
	}
	return out.Kid, nil
}

func (p *OIDCProvider) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	return p.doJSON(req, v)
}

func (p *OIDCProvider) doJSON(req *http.Request, v any) error {
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, lastLines(string(body), 5))
	}
	return json.Unmarshal(body, v)
}

// Stop stops the provider and removes a temp state dir.
func (p *OIDCProvider) Stop() error {
	if p == nil {
		return nil
	}
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	err := p.stopProcess()
	if p.removeDir {
		if rmErr := os.RemoveAll(p.Dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove state dir: %w", rmErr))
		}
		p.removeDir = false
	}
	return err
}

func (p *OIDCProvider) stopProcess() error {
	if p.proc == nil {
		return nil
	}
	err := p.proc.stop(stopTimeout)
	p.proc = nil
	return err
}

var sharedOIDC *OIDCProvider

// WithOIDC starts the example OpenID provider; tests reach it with SharedOIDC.
func WithOIDC() Option {
	return Option{component{
		name: "example OpenID provider",
		start: func(ctx context.Context) (stopper, error) {
			p, err := StartOIDCProvider(ctx, OIDCProviderConfig{})
			if err != nil {
				return nil, err
			}
			sharedOIDC = p
			return p, nil
		},
		ready: func(verbose bool, s stopper) {
			if p := s.(*OIDCProvider); verbose {
				fmt.Fprintf(os.Stderr, "testenv: OpenID provider at %s ready in %s\n", p.Issuer, p.StartupTime.Round(time.Millisecond))
			}
		},
		clear: func() { sharedOIDC = nil },
	}}
}

// SharedOIDC returns the provider started by Run(m, WithOIDC()) in this binary's TestMain.
func SharedOIDC(tb testing.TB) *OIDCProvider {
	tb.Helper()
	if sharedOIDC == nil {
		tb.Fatal("testenv: no OpenID provider: call os.Exit(testenv.Run(m, testenv.WithOIDC())) from this package's TestMain")
	}
	return sharedOIDC
}
