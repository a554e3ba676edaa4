package testenv

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// The OpenLDAP test directory's layout.
const (
	OpenLDAPBaseDN   = "dc=example,dc=org"
	OpenLDAPAdminDN  = "cn=admin," + OpenLDAPBaseDN
	OpenLDAPPeopleDN = "ou=people," + OpenLDAPBaseDN
	OpenLDAPGroupsDN = "ou=groups," + OpenLDAPBaseDN

	slapdSchemaDir = "/etc/ldap/schema"
	slapdModuleDir = "/usr/lib/ldap"
)

// OpenLDAPConfig says where slapd keeps its state.
type OpenLDAPConfig struct {
	// Dir holds slapd.conf, the database and slapd.log; a temp dir, removed by Stop, if empty.
	// Each start makes a fresh database.
	Dir string
	// Stdout and Stderr receive slapd's log; default slapd.log in Dir.
	Stdout, Stderr io.Writer
	// Port is slapd's plain LDAP port on 127.0.0.1; 0 picks a free one.
	Port int
}

// OpenLDAP is a private slapd (mdb database, memberof overlay) on plain LDAP.
type OpenLDAP struct {
	URL           string // ldap://127.0.0.1:port
	BaseDN        string // dc=example,dc=org
	PeopleDN      string // ou=people,<BaseDN>: users
	GroupsDN      string // ou=groups,<BaseDN>: groups
	AdminDN       string // the rootdn
	AdminPassword string
	Dir           string
	StartupTime   time.Duration

	stopMu    sync.Mutex
	slapd     *process
	removeDir bool
	nextID    atomic.Int64 // uidNumber / gidNumber
}

// StartOpenLDAP writes a slapd.conf, starts slapd in the foreground, waits until it answers
// an admin bind and adds the base entries. ctx bounds the start only; call Stop to end it.
func StartOpenLDAP(ctx context.Context, cfg OpenLDAPConfig) (*OpenLDAP, error) {
	started := time.Now()
	slapd, err := exec.LookPath("slapd")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/slapd"); statErr != nil {
			return nil, fmt.Errorf("slapd not found: %w (run hack/deps.sh to install slapd and ldap-utils)", err)
		}
		slapd = "/usr/sbin/slapd"
	}
	o := &OpenLDAP{
		BaseDN: OpenLDAPBaseDN, PeopleDN: OpenLDAPPeopleDN, GroupsDN: OpenLDAPGroupsDN,
		AdminDN: OpenLDAPAdminDN, AdminPassword: randomToken()[:20], Dir: cfg.Dir,
	}
	o.nextID.Store(10000)
	if o.Dir == "" {
		dir, err := os.MkdirTemp("", "kaccess-testenv-openldap-")
		if err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
		o.Dir, o.removeDir = dir, true
	}
	err = startPickingPorts(cfg.Port != 0, func() error { return o.start(ctx, cfg, slapd) }, o.stopProcess)
	if err != nil {
		_ = o.Stop()
		return nil, err
	}
	o.StartupTime = time.Since(started)
	return o, nil
}

func (o *OpenLDAP) start(ctx context.Context, cfg OpenLDAPConfig, slapd string) error {
	port := cfg.Port
	if port == 0 {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		port = ports[0]
	}
	o.URL = "ldap://127.0.0.1:" + strconv.Itoa(port)
	dataDir := filepath.Join(o.Dir, "data")
	if err := os.RemoveAll(dataDir); err != nil {
		return fmt.Errorf("clean database dir: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create database dir: %w", err)
	}
	conf := fmt.Sprintf(`# written by kaccess testenv
include %[1]s/core.schema
include %[1]s/cosine.schema
include %[1]s/inetorgperson.schema
include %[1]s/nis.schema
pidfile %[2]s/slapd.pid
argsfile %[2]s/slapd.args
modulepath %[3]s
moduleload back_mdb
moduleload memberof

database mdb
maxsize 268435456
suffix "%[4]s"
rootdn "%[5]s"
rootpw %[6]s
directory %[7]s
index objectClass eq
index uid,memberUid,member eq
overlay memberof
`, slapdSchemaDir, o.Dir, slapdModuleDir, o.BaseDN, o.AdminDN, ssha(o.AdminPassword), dataDir)
	confPath := filepath.Join(o.Dir, "slapd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("write slapd.conf: %w", err)
	}
	// -d 0: stay in the foreground (as our child, so Pdeathsig reaches it) without debug output.
	p, err := startProcess("slapd", slapd, []string{"-f", confPath, "-h", o.URL + "/", "-d", "0"},
		cfg.Stdout, cfg.Stderr, filepath.Join(o.Dir, "slapd.log"))
	if err != nil {
		return err
	}
	o.slapd = p
	if err := o.waitReady(ctx); err != nil {
		return err
	}
	return o.withAdmin(func(c *ldap.Conn) error {
		for _, e := range []struct{ dn, class, attr, value string }{
			{o.BaseDN, "dcObject", "dc", "example"},
			{o.PeopleDN, "organizationalUnit", "ou", "people"},
			{o.GroupsDN, "organizationalUnit", "ou", "groups"},
		} {
			req := ldap.NewAddRequest(e.dn, nil)
			classes := []string{"top", e.class}
			if e.class == "dcObject" {
				classes = append(classes, "organization")
				req.Attribute("o", []string{"Example"})
			}
			req.Attribute("objectClass", classes)
			req.Attribute(e.attr, []string{e.value})
			if err := c.Add(req); err != nil {
				return fmt.Errorf("add %s: %w", e.dn, err)
			}
		}
		return nil
	})
}

func (o *OpenLDAP) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	last := "no answer yet"
	for {
		err := o.withAdmin(func(*ldap.Conn) error { return nil })
		if err == nil {
			return nil
		}
		last = err.Error()
		select {
		case <-o.slapd.done:
			return o.slapd.failure("exited before %s answered a bind (%v); last answer: %s", o.URL, o.slapd.err, last)
		case <-ctx.Done():
			return o.slapd.failure("not ready: no bind on %s (%v); last answer: %s", o.URL, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// withAdmin runs f on a fresh connection bound as the rootdn.
func (o *OpenLDAP) withAdmin(f func(*ldap.Conn) error) error {
	conn, err := ldap.DialURL(o.URL, ldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetTimeout(30 * time.Second)
	if err := conn.Bind(o.AdminDN, o.AdminPassword); err != nil {
		return fmt.Errorf("bind as %s: %w", o.AdminDN, err)
	}
	return f(conn)
}

// UserDN and GroupDN return where AddUser and the group helpers put an entry.
func (o *OpenLDAP) UserDN(uid string) string { return "uid=" + ldap.EscapeDN(uid) + "," + o.PeopleDN }
func (o *OpenLDAP) GroupDN(cn string) string { return "cn=" + ldap.EscapeDN(cn) + "," + o.GroupsDN }
func (o *OpenLDAP) nextNumber() string       { return strconv.FormatInt(o.nextID.Add(1), 10) }
func (o *OpenLDAP) add(req *ldap.AddRequest) error {
	return o.withAdmin(func(c *ldap.Conn) error { return c.Add(req) })
}

// AddUser adds an inetOrgPerson + posixAccount uid=<uid> under PeopleDN with a salted SHA
// password, and returns its DN.
func (o *OpenLDAP) AddUser(ctx context.Context, uid, password string) (string, error) {
	dn := o.UserDN(uid)
	req := ldap.NewAddRequest(dn, nil)
	req.Attribute("objectClass", []string{"top", "inetOrgPerson", "posixAccount"})
	req.Attribute("uid", []string{uid})
	req.Attribute("cn", []string{uid})
	req.Attribute("sn", []string{uid})
	req.Attribute("mail", []string{uid + "@example.org"})
	req.Attribute("uidNumber", []string{o.nextNumber()})
	req.Attribute("gidNumber", []string{"10000"})
	req.Attribute("homeDirectory", []string{"/home/" + uid})
	req.Attribute("userPassword", []string{ssha(password)})
	if err := o.add(req); err != nil {
		return "", fmt.Errorf("add OpenLDAP user %s: %w", uid, err)
	}
	return dn, nil
}

// AddGroupOfNames adds a groupOfNames cn=<cn> under GroupsDN with member DNs (at least one:
// the schema requires it); the memberof overlay then lists it in each member's memberOf.
func (o *OpenLDAP) AddGroupOfNames(ctx context.Context, cn string, memberDNs ...string) (string, error) {
	return o.addGroup(cn, "groupOfNames", "member", memberDNs)
}

// AddGroupOfUniqueNames adds a groupOfUniqueNames with uniqueMember DNs (at least one).
func (o *OpenLDAP) AddGroupOfUniqueNames(ctx context.Context, cn string, memberDNs ...string) (string, error) {
	return o.addGroup(cn, "groupOfUniqueNames", "uniqueMember", memberDNs)
}

func (o *OpenLDAP) addGroup(cn, class, attr string, members []string) (string, error) {
	if len(members) == 0 {
		return "", fmt.Errorf("add OpenLDAP %s %s: needs at least one member", class, cn)
	}
	dn := o.GroupDN(cn)
	req := ldap.NewAddRequest(dn, nil)
	req.Attribute("objectClass", []string{"top", class})
	req.Attribute("cn", []string{cn})
	req.Attribute(attr, members)
	if err := o.add(req); err != nil {
		return "", fmt.Errorf("add OpenLDAP %s %s: %w", class, cn, err)
	}
	return dn, nil
}

// AddPosixGroup adds a posixGroup cn=<cn> with a fresh gidNumber and memberUid values.
func (o *OpenLDAP) AddPosixGroup(ctx context.Context, cn string, memberUIDs ...string) (string, error) {
	dn := o.GroupDN(cn)
	req := ldap.NewAddRequest(dn, nil)
	req.Attribute("objectClass", []string{"top", "posixGroup"})
	req.Attribute("cn", []string{cn})
	req.Attribute("gidNumber", []string{o.nextNumber()})
	if len(memberUIDs) > 0 {
		req.Attribute("memberUid", memberUIDs)
	}
	if err := o.add(req); err != nil {
		return "", fmt.Errorf("add OpenLDAP posixGroup %s: %w", cn, err)
	}
	return dn, nil
}

// Stop stops slapd and removes a temp state dir.
func (o *OpenLDAP) Stop() error {
	if o == nil {
		return nil
	}
	o.stopMu.Lock()
	defer o.stopMu.Unlock()
	err := o.stopProcess()
	if o.removeDir {
		if rmErr := os.RemoveAll(o.Dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove state dir: %w", rmErr))
		}
		o.removeDir = false
	}
	return err
}

func (o *OpenLDAP) stopProcess() error {
	if o.slapd == nil {
		return nil
	}
	err := o.slapd.stop(stopTimeout)
	o.slapd = nil
	return err
}

// ssha returns password as an RFC 2307 {SSHA} value, which slapd checks on bind.
func ssha(password string) string {
	salt := make([]byte, 8)
	_, _ = rand.Read(salt)
	h := sha1.New()
	h.Write([]byte(password))
	h.Write(salt)
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(h.Sum(nil), salt...))
}
