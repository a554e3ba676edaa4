package ldap_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/authn/ldap"
	"github.com/kaccess/kaccess/internal/testenv"
)

// injectedNames are login names that try to widen the user search (filter injection) or
// smuggle bytes past it. Tried with a real user's password, each must fail as invalid
// credentials, the same answer as an unknown user, and never find (or bind as) anyone.
func injectedNames(victim string) []string {
	return []string{
		"*",
		"**",
		"*)(uid=*",
		"*)(sAMAccountName=*",
		victim + ")(|(password=*)",
		"admin)(|(password=*)",
		victim + "*",
		"*" + victim[1:],
		victim[:1] + "*" + victim[2:],
		victim + ")(objectClass=*",
		"(uid=" + victim + ")",
		"(|(uid=*)(sAMAccountName=*))",
		victim + "\x00",
		"\x00" + victim,
		victim + "\x00)(uid=*",
		`\2a`,
		victim[:1] + `\2a`,
		`\00`,
		`\`,
		victim + `\29(uid=*`,
		victim + "\n",
		victim + " ",
		" " + victim,
		victim + "\u200b",                // zero-width space: not a control character, so it reaches the directory
		"\uff41\uff4c\uff49\uff43\uff45", // fullwidth letters
		strings.Repeat("*", ldap.MaxUsernameLength),
		strings.Repeat("a", ldap.MaxUsernameLength+1),
		strings.Repeat("*)(uid=*", 1000),
		"uid=" + victim + ",ou=people",
		"CN=" + victim + ",CN=Users",
		victim + "\xff",
	}
}

// checkInjectedLogin: invalid credentials, no identity, and the detail shows the name found
// nobody (or was refused before the search): no match, no ambiguity, no bind.
func checkInjectedLogin(t *testing.T, id *authn.Identity, err error) {
	t.Helper()
	if id != nil {
		t.Fatalf("logged in as %+v", id)
	}
	if !errors.Is(err, ldap.ErrInvalidCredentials) {
		t.Fatalf("err = %v, want invalid credentials", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "no user") && !strings.Contains(msg, "login name refused") {
		t.Fatalf("the name reached further than an empty search: %v", err)
	}
}

func TestOpenLDAPFilterInjection(t *testing.T) {
	o := testenv.SharedOpenLDAP(t)
	ctx := context.Background()
	if _, err := o.AddUser(ctx, "inj-victim", "victim-pw"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KACCESS_TEST_LDAP_PW", o.AdminPassword)
	for _, method := range []string{ldap.GroupMethodMemberOf, ldap.GroupMethodPosixGroup} {
		cfg := ldap.Config{
			Name: "dir", Type: ldap.TypeLDAP, URLs: []string{o.URL}, InsecureAllowPlain: true,
			BindDN: o.AdminDN, BindPasswordEnv: "KACCESS_TEST_LDAP_PW",
			UserBaseDN: o.PeopleDN, GroupBaseDN: o.GroupsDN, GroupMethod: method,
		}
		s := newSource(t, cfg, ldap.Options{})
		for _, name := range injectedNames("inj-victim") {
			t.Run(method+"/"+safeName(name), func(t *testing.T) {
				id, err := s.Login(ctx, name, "victim-pw")
				checkInjectedLogin(t, id, err)
			})
		}
		// The control: the same source logs the victim in, and a case variant is the same
		// person (uid matches case-insensitively), named as the directory names them.
		for _, name := range []string{"inj-victim", "INJ-Victim"} {
			if id, err := s.Login(ctx, name, "victim-pw"); err != nil || id.User != "inj-victim" {
				t.Fatalf("%s: control login = %+v, %v", name, id, err)
			}
		}
	}
}

// TestOpenLDAPHostileNamesInDNs: entries whose names hold DN and filter metacharacters log in
// as themselves, and their groups are found through filters built from their DN (member=)
// and name (memberUid=), escaped: a DN from the directory is data, never filter syntax.
func TestOpenLDAPHostileNamesInDNs(t *testing.T) {
	o := testenv.SharedOpenLDAP(t)
	ctx := context.Background()
	victim, err := o.AddUser(ctx, "dn-victim", "dn-victim-pw")
	if err != nil {
		t.Fatal(err)
	}
	hostile := []string{`eve,ou=admins`, `eve*`, `eve)(uid=*`, `eve+cn=root`, `eve\5c`, `#eve`, `eve;x`, `"eve"`, `eve<>=`}
	for i, uid := range hostile {
		dn, err := o.AddUser(ctx, uid, "eve-pw")
		if err != nil {
			t.Fatal(err)
		}
		group := "dn-grp-" + string(rune('a'+i))
		if _, err := o.AddGroupOfNames(ctx, group, dn); err != nil {
			t.Fatal(err)
		}
		if _, err := o.AddPosixGroup(ctx, "posix-"+group, uid); err != nil {
			t.Fatal(err)
		}
	}
	// The victim is in a group none of the hostile entries is in.
	if _, err := o.AddGroupOfNames(ctx, "dn-victims", victim); err != nil {
		t.Fatal(err)
	}
	if _, err := o.AddPosixGroup(ctx, "posix-dn-victims", "dn-victim"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KACCESS_TEST_LDAP_PW", o.AdminPassword)
	for _, tt := range []struct{ method, prefix string }{
		{ldap.GroupMethodGroupOfNames, "dir:dn-grp-"},
		{ldap.GroupMethodPosixGroup, "dir:posix-dn-grp-"},
	} {
		cfg := ldap.Config{
			Name: "dir", Type: ldap.TypeLDAP, URLs: []string{o.URL}, InsecureAllowPlain: true,
			BindDN: o.AdminDN, BindPasswordEnv: "KACCESS_TEST_LDAP_PW",
			UserBaseDN: o.PeopleDN, GroupBaseDN: o.GroupsDN, GroupMethod: tt.method,
		}
		s := newSource(t, cfg, ldap.Options{})
		for i, uid := range hostile {
			t.Run(tt.method+"/"+safeName(uid), func(t *testing.T) {
				id, err := s.Login(ctx, uid, "eve-pw")
				if err != nil {
					t.Fatal(err)
				}
				want := []string{tt.prefix + string(rune('a'+i))}
				if id.User != uid || !slices.Equal(id.Groups, want) {
					t.Fatalf("identity %q groups %v, want %q groups %v", id.User, id.Groups, uid, want)
				}
				// The hostile entry's password is not the victim's, and the other way round.
				if _, err := s.Login(ctx, "dn-victim", "eve-pw"); !errors.Is(err, ldap.ErrInvalidCredentials) {
					t.Fatalf("victim with eve's password: %v", err)
				}
			})
		}
	}
}

func TestADFilterInjection(t *testing.T) {
	f := sharedADFixture(t)
	s := newSource(t, adConfig(t, f.ad), ldap.Options{})
	ctx := context.Background()
	for _, name := range injectedNames(f.alice) {
		t.Run(safeName(name), func(t *testing.T) {
			id, err := s.Login(ctx, name, f.password)
			checkInjectedLogin(t, id, err)
		})
	}
	if id, err := s.Login(ctx, f.alice, f.password); err != nil || id.User != f.alice {
		t.Fatalf("control login = %+v, %v", id, err)
	}
}

// safeName is a subtest name for a hostile input: bounded, printable.
func safeName(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == '/' {
			return '_'
		}
		return r
	}, s)
}
