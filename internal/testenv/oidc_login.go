package testenv

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"time"
)

// OIDCTokens is a token endpoint's answer.
type OIDCTokens struct {
	IDToken      string `json:"id_token"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
}

// Login obtains tokens for user as a browser would: the authorization code flow with PKCE
// (S256) for clientID (a public client, e.g. OIDCClientID), with the redirect to a loopback
// listener of its own. Scopes "openid profile email offline_access" are asked, so a refresh
// token comes too. The "browser" is an http.Client with a cookie jar that follows redirects.
func (p *OIDCProvider) Login(ctx context.Context, user OIDCUser, clientID string) (*OIDCTokens, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the redirect: %w", err)
	}
	redirectURI := "http://" + lis.Addr().String() + OIDCRedirectPath
	type callback struct{ code, state, err string }
	got := make(chan callback, 1)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != OIDCRedirectPath {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		select {
		case got <- callback{code: q.Get("code"), state: q.Get("state"), err: q.Get("error") + " " + q.Get("error_description")}:
		default:
		}
		_, _ = io.WriteString(w, "signed in; you may close this window")
	})}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Close()

	verifier, state, nonce := randomURLString(), randomURLString(), randomURLString()
	challenge := sha256.Sum256([]byte(verifier))
	authURL := p.discovery.AuthorizationEndpoint + "?" + url.Values{
		"client_id": {clientID}, "redirect_uri": {redirectURI}, "response_type": {"code"},
		"scope": {"openid profile email offline_access"}, "state": {state}, "nonce": {nonce},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(challenge[:])}, "code_challenge_method": {"S256"},
	}.Encode()

	resp, err := p.Authorize(ctx, authURL, user)
	if err != nil {
		return nil, err
	}
	var cb callback
	select {
	case cb = <-got:
	default:
		return nil, fmt.Errorf("login form: no redirect to %s; got %s at %s: %s", redirectURI, resp.Status, resp.Request.URL.Redacted(), resp.body)
	}
	if cb.code == "" {
		return nil, fmt.Errorf("redirect without a code: %s", strings.TrimSpace(cb.err))
	}
	if cb.state != state {
		return nil, errors.New("redirect with the wrong state")
	}
	// 3. The code exchange, proving possession of the PKCE verifier.
	return p.token(ctx, url.Values{
		"grant_type": {"authorization_code"}, "code": {cb.code}, "redirect_uri": {redirectURI},
		"client_id": {clientID}, "code_verifier": {verifier},
	}, "", "")
}

// Authorize plays the browser for an authorization URL someone else built (e.g. the one
// `kaccess login` prints): it opens the login page, submits user's credentials and follows the
// redirects, ending at the client's redirect URI. It returns the last page.
func (p *OIDCProvider) Authorize(ctx context.Context, authURL string, user OIDCUser) (*page, error) {
	browser := p.browser()
	// 1. The authorization request lands on the provider's login page.
	resp, err := get(ctx, browser, authURL)
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	authRequestID := resp.Request.URL.Query().Get("authRequestID")
	if resp.StatusCode != http.StatusOK || authRequestID == "" {
		return nil, fmt.Errorf("authorize: expected the login page, got %s at %s: %s", resp.Status, resp.Request.URL.Redacted(), resp.body)
	}
	// 2. The login form; the provider then redirects to the redirect URI with the code.
	form := url.Values{"id": {authRequestID}, "username": {user.Username}, "password": {user.Password}}
	resp, err = postForm(ctx, browser, p.Issuer+"login/username", form, "", "")
	if err != nil {
		return nil, fmt.Errorf("login form: %w", err)
	}
	return resp, nil
}

// ApproveDevice plays the person on the second device: at the provider's device page it enters
// userCode, logs in as user and allows the request.
func (p *OIDCProvider) ApproveDevice(ctx context.Context, userCode string, user OIDCUser) error {
	browser := p.browser()
	resp, err := postForm(ctx, browser, p.Issuer+"device/login", url.Values{
		"user_code": {userCode}, "username": {user.Username}, "password": {user.Password},
	}, "", "")
	if err != nil || resp.StatusCode != http.StatusOK || strings.Contains(resp.Request.URL.RawQuery, "prompt=") {
		return fmt.Errorf("device login page: %v %v", err, resp)
	}
	if resp, err = postForm(ctx, browser, p.Issuer+"device/confirm", url.Values{"action": {"allowed"}}, "", ""); err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("device confirm: %v %v", err, resp)
	}
	return nil
}

// Refresh exchanges a refresh token of a public client for new tokens.
func (p *OIDCProvider) Refresh(ctx context.Context, clientID, refreshToken string) (*OIDCTokens, error) {
	return p.token(ctx, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}, "client_id": {clientID}}, "", "")
}

// DeviceLogin runs the device authorization grant for OIDCDeviceClientID: it asks for a
// device code, approves the user code as user on the provider's device pages (as a person on
// another machine would), then polls the token endpoint.
func (p *OIDCProvider) DeviceLogin(ctx context.Context, user OIDCUser) (*OIDCTokens, error) {
	var dev struct {
		DeviceCode      string `json:"device_code"`
		UserCode        string `json:"user_code"`
		VerificationURI string `json:"verification_uri"`
		Interval        int    `json:"interval"`
	}
	req, err := newFormRequest(ctx, p.discovery.DeviceAuthorizationEndpoint, url.Values{"scope": {"openid profile email"}}, OIDCDeviceClientID, OIDCClientSecret)
	if err != nil {
		return nil, err
	}
	if err := p.doJSON(req, &dev); err != nil {
		return nil, fmt.Errorf("device authorization: %w", err)
	}
	if err := p.ApproveDevice(ctx, dev.UserCode, user); err != nil {
		return nil, err
	}
	interval := time.Duration(max(dev.Interval, 1)) * time.Second
	for {
		tok, err := p.token(ctx, url.Values{
			"grant_type":  {"urn:ietf:params:oauth:grant-type:device_code"},
			"device_code": {dev.DeviceCode}, "client_id": {OIDCDeviceClientID},
		}, OIDCDeviceClientID, OIDCClientSecret)
		if err == nil || !strings.Contains(err.Error(), "authorization_pending") && !strings.Contains(err.Error(), "slow_down") {
			return tok, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("device login: %w (last: %v)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}

func (p *OIDCProvider) token(ctx context.Context, form url.Values, user, secret string) (*OIDCTokens, error) {
	req, err := newFormRequest(ctx, p.discovery.TokenEndpoint, form, user, secret)
	if err != nil {
		return nil, err
	}
	var t OIDCTokens
	if err := p.doJSON(req, &t); err != nil {
		return nil, fmt.Errorf("token endpoint: %w", err)
	}
	if t.IDToken == "" && form.Get("grant_type") != "refresh_token" {
		return nil, errors.New("token endpoint: no id_token in the answer")
	}
	return &t, nil
}

// browser is a fresh client with a cookie jar that trusts the provider.
func (p *OIDCProvider) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Transport: p.client.Transport, Jar: jar, Timeout: 10 * time.Second}
}

type page struct {
	*http.Response
	body string
}

func get(ctx context.Context, c *http.Client, u string) (*page, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	return do(c, req)
}

func postForm(ctx context.Context, c *http.Client, u string, form url.Values, user, secret string) (*page, error) {
	req, err := newFormRequest(ctx, u, form, user, secret)
	if err != nil {
		return nil, err
	}
	return do(c, req)
}

func newFormRequest(ctx context.Context, u string, form url.Values, user, secret string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(secret))
	}
	return req, nil
}

func do(c *http.Client, req *http.Request) (*page, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return &page{Response: resp, body: lastLines(string(b), 5)}, nil
}

func randomURLString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
