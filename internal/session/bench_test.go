package session

import (
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// newBenchManager uses the real clock: the fake clock's mutex would be the
// bottleneck of a parallel benchmark.
func newBenchManager(b *testing.B, cacheSize int) *Manager {
	b.Helper()
	m, err := NewManager(Config{
		Issuer: testIssuer, KeysDir: filepath.Join(b.TempDir(), "keys"),
		CacheSize: cacheSize, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// benchClaims is a typical session: a directory user in a dozen groups.
var benchClaims = Claims{
	User: "alice@corp.example", UID: "S-1-5-21-1004", Source: "ldap:corp",
	Groups: []string{
		"ldap:dev", "ldap:platform", "ldap:oncall", "ldap:k8s-users", "ldap:eu",
		"ldap:vpn", "ldap:github", "ldap:jira", "ldap:staff", "ldap:berlin", "ldap:sre", "ldap:readers",
	},
	Extra: map[string][]string{"department": {"platform"}},
}

func benchVerify(b *testing.B, m *Manager, tok string) {
	b.Helper()
	if _, err := m.Verify(b.Context(), tok); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	m := newBenchManager(b, 0)
	tok, _ := mint(b, m, benchClaims)
	benchVerify(b, m, tok)
	b.ReportAllocs()
	for b.Loop() {
		benchVerify(b, m, tok)
	}
}

func BenchmarkVerifyUncached(b *testing.B) {
	m := newBenchManager(b, -1)
	tok, _ := mint(b, m, benchClaims)
	b.ReportAllocs()
	for b.Loop() {
		benchVerify(b, m, tok)
	}
}

func BenchmarkMint(b *testing.B) {
	m := newBenchManager(b, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := m.Mint(b.Context(), benchClaims); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCachedParallel: "one token" is the worst case, every
// goroutine on one cache shard; "1024 tokens" spreads them as real traffic does.
func BenchmarkVerifyCachedParallel(b *testing.B) {
	for _, n := range []int{1, 1024} {
		name := "one token"
		if n > 1 {
			name = "1024 tokens"
		}
		b.Run(name, func(b *testing.B) {
			m := newBenchManager(b, 0)
			toks := make([]string, n)
			for i := range toks {
				toks[i], _ = mint(b, m, benchClaims)
				benchVerify(b, m, toks[i])
			}
			var next atomic.Uint32
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(7919)) // start goroutines at different tokens
				for pb.Next() {
					if _, err := m.Verify(b.Context(), toks[i%n]); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
		})
	}
}
