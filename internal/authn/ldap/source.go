// Package ldap is the LDAP and Active Directory identity source: a person's login name and
// password become an authn.Identity with the groups the directory says they are in, nested
// groups included.
//
// A login runs: refuse an empty password (an LDAP bind with an empty password is an
// "unauthenticated bind" that succeeds: the classic hole) and odd login names; search the user
// with the service account on a pooled connection (failover across the URLs in order); bind as
// the user on a separate short-lived connection, so the pooled one is never rebound; then
// resolve the groups (AD: tokenGroups or the in-chain rule; OpenLDAP: memberOf, member DN or
// memberUid) at the same time as that bind, using them only when it succeeds.
//
// tokenGroups is the AD default. Measured side by side on Samba 4.17, prefork
// (BenchmarkADLogin, 20 logins each, a user in nested groups 32 deep and the rest wide; the
// floor is an LDAPS connect + bind of the same user, which any login needs):
//
//	groups  floor    tokenGroups  (no name cache)  inchain
//	10      7.4 ms   8.4 ms       8.0 ms           30 ms
//	100     21 ms    23 ms        26 ms            285 ms
//	1000    145 ms   155 ms       161 ms           2844 ms
//
// The in-chain rule's cost grows with the nesting on Samba. tokenGroups is the token the DC
// computes at the bind anyway (which is why the floor grows with the groups), and it is read
// while the bind runs. Naming the SIDs uses OR filters of 100 SIDs without paging: one filter
// of all 1,002 SIDs took about 490 ms, and the paging control added about 140 ms more.
package ldap

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/kaccess/kaccess/internal/authn"
)

// uacAccountDisable is userAccountControl's ACCOUNTDISABLE bit.
const uacAccountDisable = 0x2

// Options are a Source's collaborators; all optional.
type Options struct {
	// Dialer opens connections; default go-ldap over TCP with the config's TLS settings.
	Dialer Dialer
	// Limiter slows down repeated failures per login name and client address
	// (authn.WithClientAddress puts the address in the context); nil: no limit here.
	Limiter *authn.FailureLimiter
	// GroupNameCacheTTL keeps AD group SID -> name mappings (tokenGroups) this long; default
	// 10m, negative: no cache. Membership is always read live.
	GroupNameCacheTTL time.Duration
	// Now is the clock of the cache; default time.Now.
	Now func() time.Time
}

// Source logs people in against one directory.
type Source struct {
	cfg     Config
	source  string // "ldap:<name>"
	ad      bool
	dialer  Dialer
	pool    *pool
	limiter *authn.FailureLimiter
	sids    *sidCache
	timeout time.Duration
	// wrongPassword tracks how long refused logins of existing users take.
	wrongPassword durationAverage
}

// New checks cfg (after filling in defaults) and returns a Source. It does not connect: a
// directory that is down at start makes logins fail, not the gateway.
func New(cfg Config, opts Options) (*Source, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ldap source %q: %w", cfg.Name, err)
	}
	d := opts.Dialer
	if d == nil {
		nd, err := newNetDialer(&cfg)
		if err != nil {
			return nil, fmt.Errorf("ldap source %q: %w", cfg.Name, err)
		}
		d = nd
	}
	s := &Source{
		cfg: cfg, source: "ldap:" + cfg.Name, ad: cfg.Type == TypeActiveDirectory,
		dialer: d, limiter: opts.Limiter, timeout: time.Duration(cfg.Timeouts.Request),
	}
	ttl, now := opts.GroupNameCacheTTL, opts.Now
	if ttl == 0 {
		ttl = DefaultGroupNameCacheTTL
	}
	if now == nil {
		now = time.Now
	}
	s.sids = newSIDCache(ttl, now)
	s.pool = newPool(d, cfg.URLs, cfg.BindDN, cfg.bindPassword, cfg.PoolSize)
	return s, nil
}

// Name returns the source's name ("corp").
func (s *Source) Name() string { return s.cfg.Name }

// Close closes the idle pooled connections.
func (s *Source) Close() error {
	s.pool.close()
	return nil
}

// user is what the user search found.
type user struct {
	dn, name, uid string
	disabled      bool
	memberOf      []string
}

// Login checks username and password and returns who the person is. Errors wrap (%w) one of
// ErrInvalidCredentials, ErrAccountDisabled, ErrAccountLocked, ErrPasswordExpired,
// ErrDirectoryUnavailable or authn.ErrTooManyAttempts, with the detail for the log.
// Login implements authn.PasswordSource.
func (s *Source) Login(ctx context.Context, username, password string) (*authn.Identity, error) {
	addr := authn.ClientAddressFrom(ctx)
	if s.limiter != nil {
		if err := s.limiter.Allow(username, addr); err != nil {
			return nil, fmt.Errorf("%s: login of %q from %q: %w", s.source, username, addr, err)
		}
	}
	id, err := s.login(ctx, username, password)
	switch {
	case err == nil:
		if s.limiter != nil {
			s.limiter.Succeeded(username, addr)
		}
		return id, nil
	case s.limiter != nil && !errors.Is(err, ErrDirectoryUnavailable):
		s.limiter.Failed(username, addr) // the directory being down is not the person's failure
	}
	return nil, err
}

func (s *Source) login(ctx context.Context, username, password string) (*authn.Identity, error) {
	if password == "" {
		return nil, s.reject(ErrInvalidCredentials, "empty password refused for %q before any bind", username)
	}
	if len(password) > maxPasswordLength {
		return nil, s.reject(ErrInvalidCredentials, "password longer than %d bytes refused", maxPasswordLength)
	}
	if err := checkUsername(username); err != nil {
		return nil, s.reject(ErrInvalidCredentials, "%v", err)
	}
	started := time.Now()
	u, err := s.findUser(ctx, username)
	if err != nil {
		return nil, err
	}
	if u == nil {
		s.padLikeWrongPassword(ctx, started)
		return nil, s.reject(ErrInvalidCredentials, "no user %q under %s", username, s.cfg.UserBaseDN)
	}
	// The groups are read on a pooled service connection while the user's bind runs on its
	// own: on AD both make the DC compute the user's token, and one need not wait for the
	// other. The groups are used only once the bind has succeeded; after a failed bind the
	// lookup finishes in the background (bounded by the pool) and is dropped.
	type groupsResult struct {
		names []string
		err   error
	}
	resolved := make(chan groupsResult, 1)
	go func() {
		names, err := s.groups(ctx, u)
		resolved <- groupsResult{names, err}
	}()
	if err := s.bindUser(ctx, u, password); err != nil {
		if errors.Is(err, ErrInvalidCredentials) {
			s.wrongPassword.observe(time.Since(started))
		}
		return nil, err
	}
	g := <-resolved
	if g.err != nil {
		return nil, g.err
	}
	return &authn.Identity{User: u.name, UID: u.uid, Groups: g.names, Source: s.source}, nil
}

// withService runs f on a service-bound connection. A pooled connection that turns out to be
// broken is dropped and f runs once more on a fresh one (the server may have closed it).
func (s *Source) withService(ctx context.Context, f func(Conn) error) error {
	var err error
	for range 2 {
		var c Conn
		c, err = s.pool.get(ctx)
		if err != nil {
			return s.reject(ErrDirectoryUnavailable, "no service connection: %v", err)
		}
		err = f(c)
		broken := err != nil && isUnavailable(err)
		s.pool.put(c, broken)
		if !broken {
			return err
		}
	}
	return s.reject(ErrDirectoryUnavailable, "%v", err)
}

func (s *Source) findUser(ctx context.Context, username string) (*user, error) {
	attrs := []string{s.cfg.UsernameAttribute, s.cfg.UIDAttribute}
	if s.ad {
		attrs = append(attrs, "userAccountControl")
	}
	if s.cfg.GroupMethod == GroupMethodMemberOf {
		attrs = append(attrs, "memberOf")
	}
	req := goldap.NewSearchRequest(s.cfg.UserBaseDN, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases,
		2, s.timeLimit(), false, userFilter(s.cfg.UserFilter, username), attrs, nil)
	var res *goldap.SearchResult
	err := s.withService(ctx, func(c Conn) error {
		var err error
		res, err = c.Search(req)
		if goldap.IsErrorWithCode(err, goldap.LDAPResultSizeLimitExceeded) {
			return nil // two entries came back: handled below
		}
		return err
	})
	if errors.Is(err, ErrDirectoryUnavailable) {
		return nil, err
	}
	if err != nil {
		return nil, s.reject(ErrDirectoryUnavailable, "user search for %q: %v", username, err)
	}
	switch n := len(res.Entries); {
	case n == 0:
		return nil, nil // no such user: login answers as for a wrong password
	case n > 1:
		return nil, s.reject(ErrInvalidCredentials, "login name %q matches more than one entry (%s, %s): check userFilter",
			username, res.Entries[0].DN, res.Entries[1].DN)
	}
	e := res.Entries[0]
	u := &user{dn: e.DN, name: e.GetEqualFoldAttributeValue(s.cfg.UsernameAttribute), memberOf: e.GetEqualFoldAttributeValues("memberOf")}
	if u.name == "" {
		return nil, s.reject(ErrInvalidCredentials, "user %s has no %s", e.DN, s.cfg.UsernameAttribute)
	}
	raw := e.GetEqualFoldRawAttributeValue(s.cfg.UIDAttribute)
	switch {
	case strings.EqualFold(s.cfg.UIDAttribute, adUIDAttribute) && len(raw) == 16:
		u.uid, _ = guidString(raw)
	case strings.EqualFold(s.cfg.UIDAttribute, "objectSid"):
		u.uid, _ = sidString(raw)
	case len(raw) > 0 && isPrintable(raw):
		u.uid = string(raw)
	case len(raw) > 0:
		u.uid = hex.EncodeToString(raw)
	}
	if s.ad {
		if uac, err := strconv.ParseInt(e.GetAttributeValue("userAccountControl"), 10, 64); err == nil {
			u.disabled = uac&uacAccountDisable != 0
		}
	}
	return u, nil
}

// bindUser binds as the user on a fresh connection, closed right after: the pooled service
// connections are never rebound.
// padLikeWrongPassword makes the answer for an unknown user take as long as a wrong password
// has lately taken (a user bind the directory refuses), so response times do not tell which
// accounts exist. Before any wrong password was seen, a bind to a DN that does not exist stands
// in (with a fixed decoy password: the person's has no business going anywhere).
func (s *Source) padLikeWrongPassword(ctx context.Context, started time.Time) {
	typical, ok := s.wrongPassword.value()
	if !ok {
		_ = s.bindUser(ctx, &user{dn: "CN=kaccess-no-such-user," + s.cfg.UserBaseDN}, "kaccess-decoy-bind")
		return
	}
	if wait := typical - time.Since(started); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

func (s *Source) bindUser(ctx context.Context, u *user, password string) error {
	c, url, err := dialAny(ctx, s.dialer, s.cfg.URLs)
	if err != nil {
		return s.reject(ErrDirectoryUnavailable, "connect for the bind of %s: %v", u.dn, err)
	}
	defer c.Close()
	if err := c.Bind(u.dn, password); err != nil {
		code, kind := bindFailure(err)
		if kind == ErrDirectoryUnavailable {
			return s.reject(kind, "bind as %s at %s: %v", u.dn, url, err)
		}
		return s.reject(kind, "bind as %s refused (AD data %q): %v", u.dn, code, err)
	}
	if u.disabled { // the password was right, but the account says ACCOUNTDISABLE
		return s.reject(ErrAccountDisabled, "%s has userAccountControl ACCOUNTDISABLE", u.dn)
	}
	return nil
}

// timeLimit is the server-side time limit of a search, in whole seconds.
func (s *Source) timeLimit() int { return max(1, int(s.timeout/time.Second)) }

func isPrintable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

var _ authn.PasswordSource = (*Source)(nil)
