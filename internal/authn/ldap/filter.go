package ldap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	goldap "github.com/go-ldap/ldap/v3"
)

// MaxUsernameLength bounds a login name (a userPrincipalName may be up to 256 characters in AD;
// a sAMAccountName 20).
const MaxUsernameLength = 256

// maxPasswordLength bounds what is sent to the directory in a bind.
const maxPasswordLength = 1024

// errBadUsername is a login name refused before the directory sees it. It is reported to the
// person as invalid credentials: the name cannot exist.
var errBadUsername = errors.New("login name refused")

// checkUsername refuses login names that are empty, too long, not UTF-8, or hold control
// characters or leading/trailing spaces. Filter metacharacters are allowed: they are escaped.
func checkUsername(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", errBadUsername)
	case len(name) > MaxUsernameLength:
		return fmt.Errorf("%w: longer than %d bytes", errBadUsername, MaxUsernameLength)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not UTF-8", errBadUsername)
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("%w: leading or trailing space", errBadUsername)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: control character %U", errBadUsername, r)
		}
	}
	return nil
}

// userFilter returns filter with every {0} replaced by the escaped login name.
func userFilter(filter, login string) string {
	return strings.ReplaceAll(filter, filterPlaceholder, goldap.EscapeFilter(login))
}

// checkUserFilter checks that a configured user filter compiles and uses {0}.
func checkUserFilter(filter string) error {
	if !strings.Contains(filter, filterPlaceholder) {
		return fmt.Errorf("%q must contain {0}, the place of the login name", filter)
	}
	if _, err := goldap.CompileFilter(userFilter(filter, "x")); err != nil {
		return fmt.Errorf("%q does not compile: %v", filter, err)
	}
	return nil
}

// memberFilter returns (&(objectClass=<class>)(<attr>=<escaped value>)).
func memberFilter(class, attr, value string) string {
	return "(&(objectClass=" + class + ")(" + attr + "=" + goldap.EscapeFilter(value) + "))"
}

// inChainFilter matches every group that holds dn directly or through nesting (AD's
// LDAP_MATCHING_RULE_IN_CHAIN).
func inChainFilter(dn string) string {
	return "(member:1.2.840.113556.1.4.1941:=" + goldap.EscapeFilter(dn) + ")"
}

// sidsFilter returns (|(objectSid=\01\05...)...) for binary SIDs.
func sidsFilter(sids [][]byte) string {
	var b strings.Builder
	b.Grow(len(sids) * 96)
	b.WriteString("(|")
	for _, sid := range sids {
		b.WriteString("(objectSid=")
		for _, c := range sid {
			fmt.Fprintf(&b, `\%02x`, c)
		}
		b.WriteString(")")
	}
	b.WriteString(")")
	return b.String()
}

// validAttributeName accepts an LDAP attribute description: a name or an OID.
func validAttributeName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case (r >= '0' && r <= '9') || r == '-' || r == '.':
			if i == 0 && r == '-' {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// guidString formats a 16-byte AD objectGUID canonically (its first three fields are
// little-endian on the wire).
func guidString(b []byte) (string, error) {
	if len(b) != 16 {
		return "", fmt.Errorf("objectGUID has %d bytes, want 16", len(b))
	}
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16]), nil
}

// sidString formats a binary SID as S-1-5-21-...
func sidString(b []byte) (string, error) {
	if len(b) < 8 || int(b[1]) != (len(b)-8)/4 || (len(b)-8)%4 != 0 {
		return "", fmt.Errorf("malformed SID of %d bytes", len(b))
	}
	var auth uint64
	for _, c := range b[2:8] {
		auth = auth<<8 | uint64(c)
	}
	var s strings.Builder
	s.WriteString("S-" + strconv.Itoa(int(b[0])) + "-" + strconv.FormatUint(auth, 10))
	for i := 8; i < len(b); i += 4 {
		s.WriteString("-" + strconv.FormatUint(uint64(binary.LittleEndian.Uint32(b[i:])), 10))
	}
	return s.String(), nil
}
