// Command oidc-provider runs the example OpenID provider of github.com/zitadel/oidc/v3
// (example/server/exampleop and its in-memory storage) for kaccess' integration tests.
//
// What it adds to the example, without changing the example's own behaviour:
//   - a listen address and issuer URL from flags, and TLS when a certificate is given;
//   - the kaccess test clients (see registerClients);
//   - a "groups" claim (and email) in ID tokens, which the example storage does not have;
//   - the device flow's subject is the user's ID, as in the code flow (see
//     CompleteDeviceAuthorization: the example's own device flow fails with "user not found");
//   - signing-key rotation: POST /test/rotate-keys makes a new RS256 key the signing key and
//     keeps the previous ones in the JWKS, as a real provider does during a rollover.
//
// It is a test tool: the users, passwords and client secrets are the example's fixed ones.
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9998", "listen address")
	issuer := flag.String("issuer", "", "issuer URL (default http(s)://<addr>/)")
	certFile := flag.String("tls-cert", "", "PEM serving certificate: serve HTTPS")
	keyFile := flag.String("tls-key", "", "PEM key of -tls-cert")
	redirects := flag.String("redirect-uris", "http://127.0.0.1/callback", "comma-separated redirect URIs of the test clients (loopback ports are ignored for the native client)")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if *issuer == "" {
		scheme := "http"
		if *certFile != "" {
			scheme = "https"
		}
		*issuer = fmt.Sprintf("%s://%s/", scheme, *addr)
	}
	registerClients(strings.Split(*redirects, ","))

	keys, err := newRotatingKeys()
	if err != nil {
		logger.Error("generate signing key", "error", err)
		os.Exit(1)
	}
	users := storage.NewUserStore(*issuer)
	stor := &testStorage{Storage: storage.NewStorage(users), users: users, keys: keys}
	router := exampleop.SetupServer(*issuer, stor, logger, false)
	router.Post("/test/rotate-keys", func(w http.ResponseWriter, _ *http.Request) {
		kid, err := keys.rotate()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"kid": kid})
	})

	srv := &http.Server{Addr: *addr, Handler: router, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	logger.Info("oidc provider listening", "issuer", *issuer, "addr", *addr)
	if *certFile != "" {
		err = srv.ListenAndServeTLS(*certFile, *keyFile)
	} else {
		err = srv.ListenAndServe()
	}
	if err != nil && err != http.ErrServerClosed {
		logger.Error("serve", "error", err)
		os.Exit(1)
	}
}

// Test clients. "native" and "other" are public clients (authorization code with PKCE, no
// secret, any loopback port, refresh tokens): two audiences for the same users. "web" is a
// confidential client with the secret "secret"; "device" (secret "secret") may use the device
// authorization grant.
func registerClients(redirectURIs []string) {
	storage.RegisterClients(
		storage.NativeClient("native", redirectURIs...),
		storage.NativeClient("other", redirectURIs...),
		storage.WebClient("web", "secret", redirectURIs...),
		storage.DeviceClient("device", "secret"),
	)
}

// demoGroups are the groups claim of the example's two users (by their ID, the sub claim).
var demoGroups = map[string][]string{
	"id1": {"admins", "developers"},
	"id2": {"developers"},
}

// testStorage is the example's storage with rotating keys and a groups claim.
type testStorage struct {
	*storage.Storage
	users storage.UserStore
	keys  *rotatingKeys
}

// CompleteDeviceAuthorization fixes the example's device flow: its confirm page passes the
// login name as the subject, but tokens are then made by looking the subject up as a user ID
// ("user not found"). The subject becomes the user's ID, as in the code flow.
func (s *testStorage) CompleteDeviceAuthorization(ctx context.Context, userCode, subject string) error {
	if u := s.users.GetUserByUsername(subject); u != nil {
		subject = u.ID
	}
	return s.Storage.CompleteDeviceAuthorization(ctx, userCode, subject)
}

// SetUserinfoFromRequest fills ID token claims: the example's, plus email and groups, so that
// ID tokens carry what a gateway maps to a Kubernetes user and groups.
func (s *testStorage) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, info, req, scopes); err != nil {
		return err
	}
	sub := req.GetSubject()
	if email, ok := map[string]string{"id1": "test-user@zitadel.ch", "id2": "test-user2@zitadel.ch"}[sub]; ok {
		info.Email = email
		info.EmailVerified = oidc.Bool(true)
	}
	if g, ok := demoGroups[sub]; ok {
		info.AppendClaims("groups", g)
	}
	return nil
}

// SigningKey implements op.Storage with the current rotating key.
func (s *testStorage) SigningKey(context.Context) (op.SigningKey, error) {
	return s.keys.current(), nil
}

// SignatureAlgorithms implements op.Storage.
func (s *testStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

// KeySet implements op.Storage: every key made so far, newest first.
func (s *testStorage) KeySet(context.Context) ([]op.Key, error) { return s.keys.all(), nil }

type rsaKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k *rsaKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *rsaKey) Key() any                                    { return k.key }
func (k *rsaKey) ID() string                                  { return k.id }

type publicRSAKey struct{ *rsaKey }

func (k publicRSAKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicRSAKey) Use() string                        { return "sig" }
func (k publicRSAKey) Key() any                           { return &k.key.PublicKey }

type rotatingKeys struct {
	mu   sync.Mutex
	keys []*rsaKey // newest first
	n    int
}

func newRotatingKeys() (*rotatingKeys, error) {
	r := &rotatingKeys{}
	_, err := r.rotate()
	return r, err
}

func (r *rotatingKeys) rotate() (string, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	key := &rsaKey{id: fmt.Sprintf("key-%d-%d", time.Now().Unix(), r.n), key: k}
	r.keys = append([]*rsaKey{key}, r.keys...)
	return key.id, nil
}

func (r *rotatingKeys) current() *rsaKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys[0]
}

func (r *rotatingKeys) all() []op.Key {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]op.Key, len(r.keys))
	for i, k := range r.keys {
		out[i] = publicRSAKey{k}
	}
	return out
}

// GetClientByClientID lets the public "native" client use the device grant as well, as CLIs may
// at Okta or Entra ID: `kaccess login --device` is a public client.
func (s *testStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil || id != "native" {
		return c, err
	}
	return deviceCapable{c}, nil
}

// deviceCapable adds the device grant to a client, keeping its redirect globs.
type deviceCapable struct{ op.Client }

func (c deviceCapable) GrantTypes() []oidc.GrantType {
	return append(c.Client.GrantTypes(), oidc.GrantTypeDeviceCode)
}

func (c deviceCapable) RedirectURIGlobs() []string {
	if g, ok := c.Client.(op.HasRedirectGlobs); ok {
		return g.RedirectURIGlobs()
	}
	return nil
}

func (c deviceCapable) PostLogoutRedirectURIGlobs() []string {
	if g, ok := c.Client.(op.HasRedirectGlobs); ok {
		return g.PostLogoutRedirectURIGlobs()
	}
	return nil
}
