package ldap_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/authn/ldap"
)

var guidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestADNestedGroupsBothMethods(t *testing.T) {
	f := sharedADFixture(t)
	want := []string{"corp:k8s-dept", "corp:k8s-division", "corp:k8s-team"}
	for _, method := range []string{ldap.GroupMethodTokenGroups, ldap.GroupMethodInChain} {
		t.Run(method, func(t *testing.T) {
			cfg := adConfig(t, f.ad)
			cfg.GroupMethod = method
			s := newSource(t, cfg, ldap.Options{})
			for _, login := range []string{f.alice, f.ad.UPN(f.alice), "ALICE"} {
				id, err := s.Login(context.Background(), login, f.password)
				if err != nil {
					t.Fatalf("login %q: %v", login, err)
				}
				if id.User != f.alice || id.Source != "ldap:corp" || !guidPattern.MatchString(id.UID) {
					t.Errorf("login %q: identity %+v", login, id)
				}
				for _, g := range want {
					if !slices.Contains(id.Groups, g) {
						t.Errorf("login %q with %s: groups %v lack %s", login, method, id.Groups, g)
					}
				}
			}
		})
	}
}

func TestADRefusals(t *testing.T) {
	f := sharedADFixture(t)
	ctx := context.Background()
	s := newSource(t, adConfig(t, f.ad), ldap.Options{})

	if err := f.ad.CreateUser(ctx, "dora", "Dora-pw-1"); err != nil {
		t.Fatal(err)
	}
	if err := f.ad.DisableUser(ctx, "dora"); err != nil {
		t.Fatal(err)
	}
	if err := f.ad.CreateUser(ctx, "eve", "Eve-pw-1"); err != nil {
		t.Fatal(err)
	}
	if err := f.ad.ExpirePassword(ctx, "eve"); err != nil {
		t.Fatal(err)
	}
	if err := f.ad.CreateUser(ctx, "lou", "Lou-pw-1"); err != nil {
		t.Fatal(err)
	}
	if err := f.ad.LockUser(ctx, "lou"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, user, password string
		want                 error
	}{
		{"wrong password", f.alice, "nope", ldap.ErrInvalidCredentials},
		{"unknown user", "nobody-here", "whatever", ldap.ErrInvalidCredentials},
		{"empty password", f.alice, "", ldap.ErrInvalidCredentials},
		{"filter injection", "*)(uid=*", f.password, ldap.ErrInvalidCredentials},
		{"filter injection sAMAccountName", "*)(sAMAccountName=*", f.password, ldap.ErrInvalidCredentials},
		{"wildcard", "admin*", f.password, ldap.ErrInvalidCredentials},
		{"wildcard alone", "*", f.password, ldap.ErrInvalidCredentials},
		{"control character", "alice\x00", f.password, ldap.ErrInvalidCredentials},
		{"too long", string(make([]byte, 300)), f.password, ldap.ErrInvalidCredentials},
		{"disabled", "dora", "Dora-pw-1", ldap.ErrAccountDisabled},
		{"disabled, wrong password", "dora", "wrong", ldap.ErrInvalidCredentials},
		{"password expired", "eve", "Eve-pw-1", ldap.ErrPasswordExpired},
		{"locked", "lou", "Lou-pw-1", ldap.ErrAccountLocked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := s.Login(ctx, tt.user, tt.password)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Login(%q) = %+v, %v; want %v", tt.user, id, err, tt.want)
			}
			t.Logf("log detail: %v", err)
		})
	}
}

func TestADDirectoryDown(t *testing.T) {
	f := sharedADFixture(t)
	dead := deadURL(t)
	cfg := adConfig(t, f.ad)
	cfg.URLs = []string{dead}
	cfg.Timeouts.Dial = ldap.Duration(time.Second)
	s := newSource(t, cfg, ldap.Options{})
	start := time.Now()
	_, err := s.Login(context.Background(), f.alice, f.password)
	if !errors.Is(err, ldap.ErrDirectoryUnavailable) {
		t.Fatalf("err = %v, want ErrDirectoryUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s to say the directory is down", d)
	}

	t.Run("failover", func(t *testing.T) {
		cfg := adConfig(t, f.ad)
		cfg.URLs = []string{dead, f.ad.URL}
		s := newSource(t, cfg, ldap.Options{})
		id, err := s.Login(context.Background(), f.alice, f.password)
		if err != nil || id.User != f.alice {
			t.Fatalf("Login = %+v, %v", id, err)
		}
	})
	t.Run("wrong service password", func(t *testing.T) {
		cfg := adConfig(t, f.ad)
		t.Setenv("KACCESS_TEST_BIND_PW", "not-the-password")
		cfg.BindPasswordFile, cfg.BindPasswordEnv = "", "KACCESS_TEST_BIND_PW"
		s := newSource(t, cfg, ldap.Options{})
		if _, err := s.Login(context.Background(), f.alice, f.password); !errors.Is(err, ldap.ErrDirectoryUnavailable) {
			t.Fatalf("err = %v, want ErrDirectoryUnavailable", err)
		}
	})
}

func TestADRateLimit(t *testing.T) {
	f := sharedADFixture(t)
	now := time.Unix(1_000_000, 0)
	lim := authn.NewFailureLimiter(authn.FailureLimiterConfig{UserBurst: 2, UserEvery: time.Minute, Now: func() time.Time { return now }})
	s := newSource(t, adConfig(t, f.ad), ldap.Options{Limiter: lim})
	ctx := authn.WithClientAddress(context.Background(), "192.0.2.1")
	for i := range 2 {
		if _, err := s.Login(ctx, "ratelimited-user", "x"); !errors.Is(err, ldap.ErrInvalidCredentials) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	if _, err := s.Login(ctx, "ratelimited-user", "x"); !errors.Is(err, authn.ErrTooManyAttempts) {
		t.Fatalf("third attempt: %v, want ErrTooManyAttempts", err)
	}
	if _, err := s.Login(ctx, f.alice, f.password); err != nil {
		t.Fatalf("another user is not limited: %v", err)
	}
}

// deadURL returns an ldaps:// URL on which nothing listens.
func deadURL(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return fmt.Sprintf("ldaps://%s", addr)
}

func TestADConcurrentLogins(t *testing.T) {
	f := sharedADFixture(t)
	cfg := adConfig(t, f.ad)
	cfg.PoolSize = 2 // fewer connections than callers: they wait for a slot
	s := newSource(t, cfg, ldap.Options{})
	// Wrong passwords go to users of their own, one each: the test domain locks an account
	// after five failures, and alice must stay usable.
	for i := range 40 {
		if (i/5+i%5)%3 == 0 {
			if err := f.ad.CreateUser(context.Background(), fmt.Sprintf("conc%d", i), f.password); err != nil {
				t.Fatal(err)
			}
		}
	}
	errs := make(chan error, 40)
	for i := range 8 {
		go func() {
			for j := range 5 {
				user, pw := f.alice, f.password
				if (i+j)%3 == 0 {
					user, pw = fmt.Sprintf("conc%d", i*5+j), "wrong"
				}
				id, err := s.Login(context.Background(), user, pw)
				switch {
				case pw == "wrong" && !errors.Is(err, ldap.ErrInvalidCredentials):
					errs <- fmt.Errorf("wrong password: %v", err)
				case pw != "wrong" && (err != nil || len(id.Groups) < 3):
					errs <- fmt.Errorf("login: %+v, %v", id, err)
				default:
					errs <- nil
				}
			}
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
