package ldap_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/kaccess/kaccess/internal/authn/ldap"
	"github.com/kaccess/kaccess/internal/testenv"
)

var (
	nestedMu    sync.Mutex
	nestedUsers = map[int]string{}
)

// nestedUser returns a user in n nested groups (deep and wide), made once per n.
func nestedUser(b *testing.B, ad *testenv.AD, n int) string {
	b.Helper()
	nestedMu.Lock()
	defer nestedMu.Unlock()
	if u, ok := nestedUsers[n]; ok {
		return u
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	u := fmt.Sprintf("bn%d", n)
	if err := ad.CreateUser(ctx, u, benchPassword); err != nil {
		b.Fatal(err)
	}
	if _, err := ad.CreateNestedGroups(ctx, u, n); err != nil {
		b.Fatal(err)
	}
	nestedUsers[n] = u
	return u
}

const benchPassword = "Bench-pw-1"

// BenchmarkADLogin: a whole login (pooled service search, fresh connection + user bind,
// group resolution) for a user in 10, 100 and 1,000 nested groups, with each method, next to
// the floor: a fresh LDAPS connection and a bind of the same user, which any login needs.
// tokenGroups-nocache names every group by SID on every login; tokenGroups keeps the names
// (membership is read live either way).
func BenchmarkADLogin(b *testing.B) {
	ad := testenv.SharedAD(b)
	for _, n := range []int{10, 100, 1000} {
		user := nestedUser(b, ad, n)
		b.Run(fmt.Sprintf("groups=%d/floor", n), func(b *testing.B) {
			for b.Loop() {
				conn, err := goldap.DialURL(ad.URL, goldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}),
					goldap.DialWithTLSConfig(ad.TLSConfig()))
				if err != nil {
					b.Fatal(err)
				}
				if err := conn.Bind(ad.UPN(user), benchPassword); err != nil {
					b.Fatal(err)
				}
				_ = conn.Close()
			}
		})
		for _, v := range []struct {
			name, method string
			cacheTTL     time.Duration
		}{
			{"tokenGroups", ldap.GroupMethodTokenGroups, 0},
			{"tokenGroups-nocache", ldap.GroupMethodTokenGroups, -1},
			{"inchain", ldap.GroupMethodInChain, 0},
		} {
			b.Run(fmt.Sprintf("groups=%d/%s", n, v.name), func(b *testing.B) {
				cfg := adConfig(b, ad)
				cfg.GroupMethod = v.method
				s := newSource(b, cfg, ldap.Options{GroupNameCacheTTL: v.cacheTTL})
				groups := 0
				for b.Loop() {
					id, err := s.Login(context.Background(), user, benchPassword)
					if err != nil {
						b.Fatal(err)
					}
					groups = len(id.Groups)
				}
				if groups < n {
					b.Fatalf("%d groups, want at least %d", groups, n)
				}
				b.ReportMetric(float64(groups), "groups")
			})
		}
	}
}

// BenchmarkADRefusals: an unknown user is answered no faster than a known user with a wrong
// password, so response times do not tell which accounts exist (compare the two ns/op). The
// wrong passwords go round many users: the test domain locks an account after five.
func BenchmarkADRefusals(b *testing.B) {
	ad := testenv.SharedAD(b)
	users := make([]string, 64)
	for i := range users {
		users[i] = fmt.Sprintf("refusal%d", i)
		if err := ad.CreateUser(context.Background(), users[i], benchPassword); err != nil {
			b.Fatal(err)
		}
	}
	s := newSource(b, adConfig(b, ad), ldap.Options{})
	next := 0
	for _, tc := range []struct {
		name string
		user func() string
	}{
		{"wrong-password", func() string { next++; return users[next%len(users)] }},
		{"unknown-user", func() string { return "nobody-here" }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Login(context.Background(), tc.user(), "not-the-password"); err == nil {
					b.Fatal("accepted")
				}
			}
		})
	}
}
