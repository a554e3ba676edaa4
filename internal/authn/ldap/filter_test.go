package ldap

import (
	"errors"
	"strings"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"
)

func TestUserFilterEscapes(t *testing.T) {
	tests := []struct{ login, want string }{
		{"alice", "(&(objectClass=inetOrgPerson)(uid=alice))"},
		{"*)(uid=*", `(&(objectClass=inetOrgPerson)(uid=\2a\29\28uid=\2a))`},
		{"admin*", `(&(objectClass=inetOrgPerson)(uid=admin\2a))`},
		{`a\b`, `(&(objectClass=inetOrgPerson)(uid=a\5cb))`},
	}
	for _, tt := range tests {
		got := userFilter(DefaultLDAPUserFilter, tt.login)
		if got != tt.want {
			t.Errorf("userFilter(%q) = %s, want %s", tt.login, got, tt.want)
		}
		if _, err := goldap.CompileFilter(got); err != nil {
			t.Errorf("%s does not compile: %v", got, err)
		}
	}
	ad := userFilter(DefaultADUserFilter, "bob@corp.example.com")
	if strings.Count(ad, "bob@corp.example.com") != 2 {
		t.Errorf("AD filter %s: both placeholders replaced?", ad)
	}
}

func TestCheckUsername(t *testing.T) {
	for _, ok := range []string{"alice", "alice@corp.example.com", "CORP-bob.smith", "*)(uid=*", "jürgen"} {
		if err := checkUsername(ok); err != nil {
			t.Errorf("checkUsername(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", " alice", "alice ", "a\x00b", "a\nb", "\xff", strings.Repeat("a", MaxUsernameLength+1)} {
		if err := checkUsername(bad); !errors.Is(err, errBadUsername) {
			t.Errorf("checkUsername(%q) = %v, want refusal", bad, err)
		}
	}
}

func TestGroupFilters(t *testing.T) {
	dn := `CN=Smith\, John (*),CN=Users,DC=corp,DC=example,DC=com`
	if got, want := inChainFilter(dn), `(member:1.2.840.113556.1.4.1941:=CN=Smith\5c, John \28\2a\29,CN=Users,DC=corp,DC=example,DC=com)`; got != want {
		t.Errorf("inChainFilter = %s, want %s", got, want)
	}
	if got, want := memberFilter("posixGroup", "memberUid", "b*b"), `(&(objectClass=posixGroup)(memberUid=b\2ab))`; got != want {
		t.Errorf("memberFilter = %s, want %s", got, want)
	}
	f := sidsFilter([][]byte{{1, 2}, {0xff}})
	if f != `(|(objectSid=\01\02)(objectSid=\ff))` {
		t.Errorf("sidsFilter = %s", f)
	}
	for _, f := range []string{inChainFilter(dn), f} {
		if _, err := goldap.CompileFilter(f); err != nil {
			t.Errorf("%s does not compile: %v", f, err)
		}
	}
}

func TestGUIDAndSID(t *testing.T) {
	// objectGUID bytes of {01020304-0506-0708-090a-0b0c0d0e0f10} as AD sends them.
	raw := []byte{4, 3, 2, 1, 6, 5, 8, 7, 9, 10, 11, 12, 13, 14, 15, 16}
	if got, err := guidString(raw); err != nil || got != "01020304-0506-0708-090a-0b0c0d0e0f10" {
		t.Errorf("guidString = %q, %v", got, err)
	}
	if _, err := guidString([]byte{1}); err == nil {
		t.Error("short GUID accepted")
	}
	// S-1-5-21-1-2-3-512
	sid := []byte{1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 2, 0, 0}
	if got, err := sidString(sid); err != nil || got != "S-1-5-21-1-2-3-512" {
		t.Errorf("sidString = %q, %v", got, err)
	}
	if _, err := sidString(sid[:10]); err == nil {
		t.Error("truncated SID accepted")
	}
}

func TestBindFailure(t *testing.T) {
	mk := func(code uint16, msg string) error { return goldap.NewError(code, errors.New(msg)) }
	tests := []struct {
		err  error
		want error
	}{
		{mk(goldap.LDAPResultInvalidCredentials, "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1"), ErrInvalidCredentials},
		{mk(goldap.LDAPResultInvalidCredentials, "AcceptSecurityContext error, data 533, v1db1"), ErrAccountDisabled},
		{mk(goldap.LDAPResultInvalidCredentials, "AcceptSecurityContext error, data 701, v1db1"), ErrAccountDisabled},
		{mk(goldap.LDAPResultInvalidCredentials, "AcceptSecurityContext error, data 775, v1db1"), ErrAccountLocked},
		{mk(goldap.LDAPResultInvalidCredentials, "AcceptSecurityContext error, data 532, v1db1"), ErrPasswordExpired},
		{mk(goldap.LDAPResultInvalidCredentials, "AcceptSecurityContext error, data 773, v1db1"), ErrPasswordExpired},
		{mk(goldap.LDAPResultInvalidCredentials, ""), ErrInvalidCredentials},
		{mk(goldap.ErrorNetwork, "connection reset"), ErrDirectoryUnavailable},
		{errors.New("something else"), ErrDirectoryUnavailable},
	}
	for _, tt := range tests {
		if _, got := bindFailure(tt.err); got != tt.want {
			t.Errorf("bindFailure(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
