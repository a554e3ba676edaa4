package ldap_test

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kaccess/kaccess/internal/authn/ldap"
	"github.com/kaccess/kaccess/internal/testenv"
)

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestOpenLDAPGroupMethods(t *testing.T) {
	o := testenv.SharedOpenLDAP(t)
	ctx := context.Background()
	bob, err := o.AddUser(ctx, "bob", "bob-pw")
	if err != nil {
		t.Fatal(err)
	}
	carol, err := o.AddUser(ctx, "carol", "carol-pw")
	if err != nil {
		t.Fatal(err)
	}
	for _, add := range []func() (string, error){
		func() (string, error) { return o.AddGroupOfNames(ctx, "devs", bob, carol) },
		func() (string, error) { return o.AddGroupOfNames(ctx, "ops", bob) },
		func() (string, error) { return o.AddGroupOfNames(ctx, "finance", carol) },
		func() (string, error) { return o.AddGroupOfUniqueNames(ctx, "auditors", bob) },
		func() (string, error) { return o.AddPosixGroup(ctx, "unix-admins", "bob") },
		func() (string, error) { return o.AddPosixGroup(ctx, "unix-users", "bob", "carol") },
		func() (string, error) { return o.AddPosixGroup(ctx, "unix-empty") },
	} {
		if _, err := add(); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("KACCESS_TEST_LDAP_PW", o.AdminPassword)
	tests := []struct {
		method string
		want   []string
	}{
		{ldap.GroupMethodMemberOf, []string{"dir:devs", "dir:ops"}},
		{ldap.GroupMethodGroupOfNames, []string{"dir:devs", "dir:ops"}},
		{ldap.GroupMethodGroupOfUniqueNames, []string{"dir:auditors"}},
		{ldap.GroupMethodPosixGroup, []string{"dir:unix-admins", "dir:unix-users"}},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			cfg := ldap.Config{
				Name: "dir", Type: ldap.TypeLDAP, URLs: []string{o.URL}, InsecureAllowPlain: true,
				BindDN: o.AdminDN, BindPasswordEnv: "KACCESS_TEST_LDAP_PW",
				UserBaseDN: o.PeopleDN, GroupBaseDN: o.GroupsDN, GroupMethod: tt.method,
			}
			s := newSource(t, cfg, ldap.Options{})
			id, err := s.Login(ctx, "bob", "bob-pw")
			if err != nil {
				t.Fatal(err)
			}
			if id.User != "bob" || !uuidPattern.MatchString(id.UID) || id.Source != "ldap:dir" {
				t.Errorf("identity %+v", id)
			}
			if !slices.Equal(id.Groups, tt.want) {
				t.Errorf("groups = %v, want %v", id.Groups, tt.want)
			}
			if _, err := s.Login(ctx, "bob", "wrong"); !errors.Is(err, ldap.ErrInvalidCredentials) {
				t.Errorf("wrong password: %v", err)
			}
			if _, err := s.Login(ctx, "*)(uid=*", "bob-pw"); !errors.Is(err, ldap.ErrInvalidCredentials) {
				t.Errorf("injection: %v", err)
			}
			if _, err := s.Login(ctx, "bob", ""); !errors.Is(err, ldap.ErrInvalidCredentials) {
				t.Errorf("empty password: %v", err)
			}
		})
	}
}

func TestOpenLDAPAmbiguousAndUnavailable(t *testing.T) {
	o := testenv.SharedOpenLDAP(t)
	ctx := context.Background()
	for _, u := range []string{"dup1", "dup2"} {
		if _, err := o.AddUser(ctx, u, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("KACCESS_TEST_LDAP_PW", o.AdminPassword)
	cfg := ldap.Config{
		Name: "dir", Type: ldap.TypeLDAP, URLs: []string{o.URL}, InsecureAllowPlain: true,
		BindDN: o.AdminDN, BindPasswordEnv: "KACCESS_TEST_LDAP_PW", UserBaseDN: o.PeopleDN,
		// A careless filter: a suffix of the mail address matches several people.
		UserFilter: "(&(objectClass=inetOrgPerson)(mail=*{0}))",
	}
	s := newSource(t, cfg, ldap.Options{})
	_, err := s.Login(ctx, "@example.org", "pw")
	if !errors.Is(err, ldap.ErrInvalidCredentials) || !strings.Contains(err.Error(), "more than one") {
		t.Fatalf("ambiguous login = %v", err)
	}

	cfg.UserFilter = ""
	cfg.URLs = []string{deadURL(t), o.URL}
	cfg.URLs[0] = strings.Replace(cfg.URLs[0], "ldaps://", "ldap://", 1)
	s = newSource(t, cfg, ldap.Options{})
	if id, err := s.Login(ctx, "dup1", "pw"); err != nil || id.User != "dup1" {
		t.Fatalf("failover: %+v, %v", id, err)
	}
}
