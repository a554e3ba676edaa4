package ldap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"
)

// fakeConn is a directory of one user, alice, who is in no groups.
type fakeConn struct {
	url      string
	mu       sync.Mutex
	binds    []string
	closed   bool
	breakNow bool // the next search fails as a dropped connection would
}

// dropNext makes the next search fail as a dropped connection would. It locks: a group lookup
// left running after a refused login may still be using the connection.
func (c *fakeConn) dropNext() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.breakNow = true
}

// setDown marks URLs unreachable and returns the connections made so far.
func (d *fakeDirectory) setDown(urls ...string) []*fakeConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = map[string]bool{}
	for _, u := range urls {
		d.down[u] = true
	}
	return append([]*fakeConn(nil), d.conns...)
}

func (c *fakeConn) Bind(user, password string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.binds = append(c.binds, user)
	if user == "cn=svc" || (user == "cn=alice" && password == "right") {
		return nil
	}
	return goldap.NewError(goldap.LDAPResultInvalidCredentials, errors.New("bad"))
}

func (c *fakeConn) Search(req *goldap.SearchRequest) (*goldap.SearchResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.breakNow {
		c.breakNow, c.closed = false, true
		return nil, goldap.NewError(goldap.ErrorNetwork, errors.New("connection reset"))
	}
	if req.Filter == "(&(objectClass=inetOrgPerson)(uid=alice))" {
		return &goldap.SearchResult{Entries: []*goldap.Entry{goldap.NewEntry("cn=alice", map[string][]string{
			"uid": {"alice"}, "entryUUID": {"7c1a2d3e-0000-4000-8000-000000000001"}})}}, nil
	}
	return &goldap.SearchResult{}, nil
}

func (c *fakeConn) SearchWithPaging(req *goldap.SearchRequest, _ uint32) (*goldap.SearchResult, error) {
	return c.Search(req)
}

func (c *fakeConn) Close() error    { c.mu.Lock(); c.closed = true; c.mu.Unlock(); return nil }
func (c *fakeConn) IsClosing() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.closed }
func (c *fakeConn) bindsSeen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string{}, c.binds...)
}

type fakeDirectory struct {
	mu    sync.Mutex
	down  map[string]bool
	conns []*fakeConn
}

func (d *fakeDirectory) Dial(_ context.Context, url string) (Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down[url] {
		return nil, goldap.NewError(goldap.ErrorNetwork, errors.New("connection refused"))
	}
	c := &fakeConn{url: url}
	d.conns = append(d.conns, c)
	return c, nil
}

func fakeSource(t *testing.T, d *fakeDirectory, urls ...string) *Source {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("svc-pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{
		Name: "dir", Type: TypeLDAP, URLs: urls, InsecureAllowPlain: true, BindDN: "cn=svc",
		BindPasswordFile: pw, UserBaseDN: "dc=example,dc=org", GroupMethod: GroupMethodGroupOfNames,
	}, Options{Dialer: d})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPoolFailoverAndNoRebind(t *testing.T) {
	d := &fakeDirectory{down: map[string]bool{"ldap://a:389": true}}
	s := fakeSource(t, d, "ldap://a:389", "ldap://b:389")
	ctx := context.Background()
	for range 3 {
		id, err := s.Login(ctx, "alice", "right")
		if err != nil {
			t.Fatal(err)
		}
		if id.User != "alice" || id.UID != "7c1a2d3e-0000-4000-8000-000000000001" || id.Source != "ldap:dir" {
			t.Errorf("identity %+v", id)
		}
	}
	// One pooled service connection, reused; one fresh connection per user bind, all on b.
	var service, user int
	for _, c := range d.conns {
		if c.url != "ldap://b:389" {
			t.Errorf("dialed %s", c.url)
		}
		switch b := c.bindsSeen(); {
		case len(b) >= 1 && b[0] == "cn=svc":
			service++
			for _, u := range b {
				if u != "cn=svc" {
					t.Errorf("pooled connection rebound as %s", u)
				}
			}
		case len(b) == 1 && b[0] == "cn=alice":
			user++
			if !c.IsClosing() {
				t.Error("user connection left open")
			}
		default:
			t.Errorf("connection with binds %v", b)
		}
	}
	if service != 1 || user != 3 {
		t.Errorf("%d service and %d user connections, want 1 and 3", service, user)
	}
}

func TestPoolReconnectsAfterError(t *testing.T) {
	d := &fakeDirectory{}
	s := fakeSource(t, d, "ldap://a:389")
	ctx := context.Background()
	if _, err := s.Login(ctx, "alice", "right"); err != nil {
		t.Fatal(err)
	}
	d.setDown()[0].dropNext() // the pooled connection drops
	if _, err := s.Login(ctx, "alice", "right"); err != nil {
		t.Fatalf("no reconnect: %v", err)
	}
	if _, err := s.Login(ctx, "alice", "wrong"); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	for _, c := range d.setDown("ldap://a:389") {
		c.dropNext()
	}
	if _, err := s.Login(ctx, "alice", "right"); !errors.Is(err, ErrDirectoryUnavailable) {
		t.Fatalf("directory down: %v", err)
	}
}
