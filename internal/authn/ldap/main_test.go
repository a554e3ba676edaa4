package ldap_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/authn/ldap"
	"github.com/kaccess/kaccess/internal/testenv"
)

// One Samba AD and one slapd for the whole binary (Samba takes fixed ports).
func TestMain(m *testing.M) { os.Exit(testenv.Run(m, testenv.WithAD(), testenv.WithOpenLDAP())) }

// adFixture is the directory most AD tests share, built once.
type adFixture struct {
	ad *testenv.AD
	// alice is in team (directly), team is in dept, dept is in division.
	alice, password string
}

var (
	adOnce sync.Once
	adFix  *adFixture
	adErr  error
)

func sharedADFixture(t testing.TB) *adFixture {
	t.Helper()
	ad := testenv.SharedAD(t)
	adOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		f := &adFixture{ad: ad, alice: "alice", password: "Alice-pw-1"}
		steps := []func() error{
			func() error { return ad.CreateUser(ctx, f.alice, f.password) },
			func() error { return ad.CreateGroup(ctx, "k8s-team") },
			func() error { return ad.CreateGroup(ctx, "k8s-dept") },
			func() error { return ad.CreateGroup(ctx, "k8s-division") },
			func() error { return ad.AddMembers(ctx, "k8s-team", f.alice) },
			func() error { return ad.AddMembers(ctx, "k8s-dept", "k8s-team") },
			func() error { return ad.AddMembers(ctx, "k8s-division", "k8s-dept") },
		}
		for _, s := range steps {
			if adErr = s(); adErr != nil {
				return
			}
		}
		adFix = f
	})
	if adErr != nil {
		t.Fatalf("build the AD fixture: %v", adErr)
	}
	return adFix
}

// adConfig returns a source config for the shared AD, the service password in a file.
func adConfig(t testing.TB, ad *testenv.AD) ldap.Config {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "bind-password")
	if err := os.WriteFile(pwFile, []byte(ad.ServicePassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return ldap.Config{
		Name: "corp", Type: ldap.TypeActiveDirectory, URLs: []string{ad.URL}, CAFile: ad.CAFile,
		BindDN: ad.ServiceUPN, BindPasswordFile: pwFile, UserBaseDN: ad.BaseDN,
	}
}

func newSource(t testing.TB, cfg ldap.Config, opts ldap.Options) *ldap.Source {
	t.Helper()
	s, err := ldap.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
