package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/oauth2"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
)

// oidcSource is what the gateway tells about an OIDC login source (ListSources).
type oidcSource struct {
	Name, IssuerURL, ClientID string
	Scopes                    []string
}

// oidcLogin holds what a person chose for an OIDC login.
type oidcLogin struct {
	device      bool
	openBrowser bool
	issuerCA    []byte
	// browse is told the URL a person must open (printed, and opened in a browser when asked).
	browse func(url string)
}

// discovery is the part of the issuer's metadata the flows need.
type discovery struct {
	AuthorizationEndpoint       string `json:"authorization_endpoint"`
	TokenEndpoint               string `json:"token_endpoint"`
	DeviceAuthorizationEndpoint string `json:"device_authorization_endpoint"`
}

func issuerClient(caData []byte) (*http.Client, error) {
	tc, err := trusting(caData, "the issuer CA file")
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}, nil
}

func discover(ctx context.Context, hc *http.Client, issuer string) (*oauth2.Config, *discovery, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach the identity provider %s: %w", issuer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("the identity provider %s answered %s to discovery", issuer, resp.Status)
	}
	var d discovery
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&d); err != nil {
		return nil, nil, fmt.Errorf("the identity provider's discovery document: %w", err)
	}
	return &oauth2.Config{Endpoint: oauth2.Endpoint{AuthURL: d.AuthorizationEndpoint, TokenURL: d.TokenEndpoint,
		DeviceAuthURL: d.DeviceAuthorizationEndpoint, AuthStyle: oauth2.AuthStyleInParams}}, &d, nil
}

// oidcTokens runs the authorization code flow with PKCE through a loopback redirect, or the
// device authorization grant, and returns the ID token and refresh token.
func oidcTokens(ctx context.Context, src oidcSource, o oidcLogin) (idToken, refreshToken string, err error) {
	hc, err := issuerClient(o.issuerCA)
	if err != nil {
		return "", "", err
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	cfg, d, err := discover(ctx, hc, src.IssuerURL)
	if err != nil {
		return "", "", err
	}
	cfg.ClientID = src.ClientID
	cfg.Scopes = withScopes(src.Scopes, "openid", "offline_access")
	var tok *oauth2.Token
	if o.device {
		if d.DeviceAuthorizationEndpoint == "" {
			return "", "", fmt.Errorf("the identity provider %s offers no device login; log in with a browser instead", src.IssuerURL)
		}
		auth, err := cfg.DeviceAuth(ctx)
		if err != nil {
			return "", "", fmt.Errorf("start the device login: %w", err)
		}
		url := auth.VerificationURIComplete
		if url == "" {
			url = auth.VerificationURI
		}
		o.browse(fmt.Sprintf("%s (code %s)", url, auth.UserCode))
		if tok, err = cfg.DeviceAccessToken(ctx, auth); err != nil {
			return "", "", fmt.Errorf("device login: %w", err)
		}
	} else if tok, err = authCodeLogin(ctx, cfg, o); err != nil {
		return "", "", err
	}
	id, _ := tok.Extra("id_token").(string)
	if id == "" {
		return "", "", errors.New("the identity provider returned no ID token (is the openid scope allowed for this client?)")
	}
	return id, tok.RefreshToken, nil
}

// authCodeLogin waits for the browser to come back to a loopback listener (RFC 8252).
func authCodeLogin(ctx context.Context, cfg *oauth2.Config, o oidcLogin) (*oauth2.Token, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the login's redirect: %w", err)
	}
	defer ln.Close()
	cfg.RedirectURL = "http://" + ln.Addr().String() + "/callback"
	verifier, state := oauth2.GenerateVerifier(), oauth2.GenerateVerifier()
	type result struct {
		code string
		err  error
	}
	done := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var res result
		switch {
		case q.Get("state") != state:
			res.err = errors.New("the login came back with the wrong state; try again")
		case q.Get("error") != "":
			res.err = fmt.Errorf("the identity provider refused the login: %s %s", q.Get("error"), q.Get("error_description"))
		default:
			res.code = q.Get("code")
		}
		if res.err != nil {
			http.Error(w, res.err.Error(), http.StatusBadRequest)
		} else {
			_, _ = io.WriteString(w, "You are logged in to kaccess. You may close this window.\n")
		}
		select {
		case done <- res:
		default:
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	url := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))
	o.browse(url)
	if o.openBrowser {
		_ = exec.Command("xdg-open", url).Start() // best effort: the URL is printed anyway
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	select {
	case res := <-done:
		if res.err != nil {
			return nil, res.err
		}
		tok, err := cfg.Exchange(ctx, res.code, oauth2.VerifierOption(verifier))
		if err != nil {
			return nil, fmt.Errorf("exchange the login code at the identity provider: %w", err)
		}
		return tok, nil
	case <-ctx.Done():
		return nil, errors.New("no login came back within 5 minutes; run kaccess login again")
	}
}

// refreshIDToken uses the kept refresh token for a fresh ID token, without asking the person.
func refreshIDToken(ctx context.Context, sess *Session) (idToken, refreshToken string, err error) {
	hc, err := issuerClient(sess.IssuerCAData)
	if err != nil {
		return "", "", err
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	cfg, _, err := discover(ctx, hc, sess.IssuerURL)
	if err != nil {
		return "", "", err
	}
	cfg.ClientID = sess.ClientID
	tok, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: sess.RefreshToken}).Token()
	if err != nil {
		return "", "", fmt.Errorf("renew the login at the identity provider: %w", err)
	}
	id, _ := tok.Extra("id_token").(string)
	if id == "" {
		return "", "", errors.New("the identity provider returned no ID token on refresh")
	}
	rt := tok.RefreshToken
	if rt == "" {
		rt = sess.RefreshToken
	}
	return id, rt, nil
}

func withScopes(scopes []string, required ...string) []string {
	out := append([]string(nil), scopes...)
	for _, r := range required {
		found := false
		for _, s := range out {
			found = found || s == r
		}
		if !found {
			out = append(out, r)
		}
	}
	return out
}

func readFileIf(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	return os.ReadFile(path)
}

// loginOIDC logs in at the source's issuer and exchanges the ID token for a gateway session.
func loginOIDC(ctx context.Context, s Streams, store Store, client *apiClient, o loginOptions, src *kaccessv1.Source, caData []byte, previous *Session) (*Session, error) {
	issuerCA, err := readFileIf(o.issuerCAFile)
	if err != nil {
		return nil, fmt.Errorf("read --issuer-ca-file: %w", err)
	}
	if issuerCA == nil && previous != nil {
		issuerCA = previous.IssuerCAData
	}
	// The person may take minutes at the identity provider.
	flowCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 6*time.Minute)
	defer cancel()
	idToken, refresh, err := oidcTokens(flowCtx, oidcSource{Name: src.GetName(), IssuerURL: src.GetIssuerUrl(), ClientID: src.GetClientId(), Scopes: src.GetScopes()},
		oidcLogin{device: o.device, openBrowser: !o.noBrowser && !o.device, issuerCA: issuerCA, browse: func(url string) {
			fmt.Fprintf(s.Err, "Log in at your identity provider:\n  %s\n", url)
		}})
	if err != nil {
		return nil, err
	}
	sess := &Session{Server: o.server, Source: src.GetName(), CAData: caData,
		IssuerURL: src.GetIssuerUrl(), ClientID: src.GetClientId(), IssuerCAData: issuerCA, RefreshToken: refresh}
	if err := exchange(flowCtx, client, sess, idToken); err != nil {
		return nil, err
	}
	return sess, store.Save(sess)
}

// exchange trades an ID token for a gateway session and fills sess with it.
func exchange(ctx context.Context, client *apiClient, sess *Session, idToken string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := client.auth.ExchangeToken(ctx, &kaccessv1.ExchangeTokenRequest{Source: sess.Source, IdToken: idToken})
	if err != nil {
		return explain(err, sess.Server)
	}
	sess.Token, sess.ExpiresAt, sess.Username = resp.GetToken(), resp.GetExpireTime().AsTime(), resp.GetIdentity().GetUser()
	return nil
}

// renewOIDC refreshes an OIDC session silently: a fresh ID token from the refresh token,
// exchanged for a fresh gateway session.
func renewOIDC(ctx context.Context, store Store, expired *Session) (*Session, error) {
	idToken, refresh, err := refreshIDToken(ctx, expired)
	if err != nil {
		return nil, err
	}
	client, err := dial(expired.Server, expired.CAData)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	fresh := *expired
	fresh.RefreshToken = refresh
	if err := exchange(ctx, client, &fresh, idToken); err != nil {
		return nil, err
	}
	return &fresh, nil
}
