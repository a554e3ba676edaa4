package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf16"

	"github.com/go-ldap/ldap/v3"
)

// The test domain. Samba listens on the standard LDAP ports, so these are fixed too.
const (
	ADRealm       = "CORP.EXAMPLE.COM"
	ADDomain      = "CORP"
	ADDNSDomain   = "corp.example.com"
	ADBaseDN      = "DC=corp,DC=example,DC=com"
	ADUsersDN     = "CN=Users," + ADBaseDN
	ADAdmin       = "Administrator"
	ADServiceUser = "svc-kaccess"
	// ADLockoutThreshold is the number of wrong passwords that lock an account (LockUser).
	ADLockoutThreshold = 5

	adHostName   = "dc1"
	adLDAPSAddr  = "127.0.0.1:636"
	adLockFile   = "kaccess-testenv-samba-ad.lock"
	adProvTime   = 2 * time.Minute
	adStopWait   = 15 * time.Second
	adReadyPause = 200 * time.Millisecond
)

// ADConfig says where the domain controller keeps its state.
type ADConfig struct {
	// Dir holds the provisioned domain, certificates and samba.log; a temp dir, removed by
	// Stop, if empty. Each start provisions a fresh domain into it.
	Dir string
	// Stdout and Stderr receive samba's log; default samba.log in Dir.
	Stdout, Stderr io.Writer
}

// AD is a running Samba Active Directory domain controller (realm CORP.EXAMPLE.COM, process
// model prefork), reached over LDAPS with a certificate for 127.0.0.1 from our own CA.
//
// Samba binds the standard ports (389, 636, 88, ...), so only one can run on a machine. StartAD
// takes an exclusive lock on a file in os.TempDir() for the AD's lifetime: a second test
// binary that wants a domain controller waits (up to its ctx) until the first one has
// stopped, instead of failing on a port in use.
type AD struct {
	URL     string // ldaps://127.0.0.1:636
	CAFile  string // PEM of the CA that signed Samba's LDAPS certificate
	CAData  []byte
	BaseDN  string // DC=corp,DC=example,DC=com
	UsersDN string // CN=Users,<BaseDN>, where the helpers create users and groups

	AdminDN       string // CN=Administrator,CN=Users,<BaseDN>
	AdminUPN      string // Administrator@corp.example.com, what a simple bind takes
	AdminPassword string

	ServiceDN       string // svc-kaccess, an ordinary user the gateway searches with
	ServiceUPN      string
	ServicePassword string

	Dir         string
	StartupTime time.Duration // from StartAD's call to LDAPS answering a bind

	stopMu    sync.Mutex
	samba     *process
	sambaRun  *processSpec // how to start samba again on the same domain (StartServer)
	lock      *os.File
	removeDir bool
	tlsConfig *tls.Config
}

// StartAD provisions a fresh domain, starts samba and waits until LDAPS answers a bind. It
// waits for the machine-wide Samba lock first (see AD). ctx bounds the start only.
func StartAD(ctx context.Context, cfg ADConfig) (*AD, error) {
	started := time.Now()
	for _, bin := range []string{"samba", "samba-tool", "ldapadd"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found: %w (run hack/deps.sh to install samba and ldap-utils)", bin, err)
		}
	}
	lock, err := lockMachineWide(ctx, adLockFile)
	if err != nil {
		return nil, fmt.Errorf("wait for the machine-wide samba lock: %w", err)
	}
	if c, err := net.DialTimeout("tcp", adLDAPSAddr, time.Second); err == nil {
		_ = c.Close()
		_ = lock.Close()
		return nil, fmt.Errorf("something already listens on %s although no kaccess test holds the samba lock; "+
			"stop it (a leftover samba? the packaged samba-ad-dc or slapd service?)", adLDAPSAddr)
	}
	a := &AD{
		URL:    "ldaps://" + adLDAPSAddr,
		BaseDN: ADBaseDN, UsersDN: ADUsersDN,
		AdminDN: "CN=" + ADAdmin + "," + ADUsersDN, AdminUPN: ADAdmin + "@" + ADDNSDomain,
		AdminPassword:   "Adm1n-" + randomToken()[:16],
		ServiceDN:       "CN=" + ADServiceUser + "," + ADUsersDN,
		ServiceUPN:      ADServiceUser + "@" + ADDNSDomain,
		ServicePassword: "Svc-" + randomToken()[:16] + "-9",
		Dir:             cfg.Dir, lock: lock,
	}
	if a.Dir == "" {
		dir, err := os.MkdirTemp("", "kaccess-testenv-ad-")
		if err != nil {
			_ = a.Stop()
			return nil, fmt.Errorf("create state dir: %w", err)
		}
		a.Dir, a.removeDir = dir, true
	}
	if err := a.start(ctx, cfg); err != nil {
		_ = a.Stop()
		return nil, err
	}
	a.StartupTime = time.Since(started)
	return a, nil
}

func (a *AD) start(ctx context.Context, cfg ADConfig) error {
	for _, sub := range []string{"domain", "tls"} { // fresh domain on every start
		if err := os.RemoveAll(filepath.Join(a.Dir, sub)); err != nil {
			return fmt.Errorf("clean state dir: %w", err)
		}
	}
	if err := a.writeTLS(); err != nil {
		return err
	}
	domainDir := filepath.Join(a.Dir, "domain")
	tlsDir := filepath.Join(a.Dir, "tls")
	provCtx, cancel := context.WithTimeout(ctx, adProvTime)
	defer cancel()
	// Samba would generate a certificate on first start, but it names the host only in its
	// subject CN (no subjectAltName), which Go's TLS verification rejects. Our own CA and
	// certificate name 127.0.0.1 and localhost, so clients verify it against the URL's host.
	prov := exec.CommandContext(provCtx, "samba-tool", "domain", "provision",
		"--realm="+ADRealm, "--domain="+ADDomain, "--server-role=dc", "--dns-backend=NONE",
		"--host-name="+adHostName, "--adminpass="+a.AdminPassword, "--targetdir="+domainDir,
		"--option=netbios name = "+strings.ToUpper(adHostName),
		"--option=interfaces = lo", "--option=bind interfaces only = yes",
		// Samba's RPC endpoints default to 49152+, inside Linux's ephemeral range (32768-60999):
		// a client connection of another test could hold the port and stop samba starting.
		"--option=rpc server dynamic port range = 61000-61999",
		"--option=tls enabled = yes",
		"--option=tls cafile = "+filepath.Join(tlsDir, "ca.pem"),
		"--option=tls certfile = "+filepath.Join(tlsDir, "cert.pem"),
		"--option=tls keyfile = "+filepath.Join(tlsDir, "key.pem"),
	)
	if out, err := prov.CombinedOutput(); err != nil {
		return fmt.Errorf("samba-tool domain provision: %w\n--- last lines ---\n%s", err, lastLines(string(out), 30))
	}
	// -i: foreground, logging to stdout. -M prefork (Samba's default) rather than single: a
	// single-process DC serves one LDAP request at a time, unlike any real AD, which hides
	// what concurrency buys (a login's group lookup overlapping its bind) and skews timings.
	a.sambaRun = &processSpec{name: "samba", bin: "samba",
		args:   []string{"-s", filepath.Join(domainDir, "etc", "smb.conf"), "-i", "-M", "prefork"},
		stdout: cfg.Stdout, stderr: cfg.Stderr, logPath: filepath.Join(a.Dir, "samba.log")}
	if err := a.startSamba(ctx); err != nil {
		return err
	}
	if err := a.configureDomain(ctx); err != nil {
		return err
	}
	if err := a.CreateUser(ctx, ADServiceUser, a.ServicePassword); err != nil {
		return fmt.Errorf("create service account: %w", err)
	}
	return nil
}

// writeTLS writes our CA, certificate and key where smb.conf points; Samba wants the key 0600.
func (a *AD) writeTLS() error {
	caPEM, certPEM, keyPEM, err := servingCert()
	if err != nil {
		return err
	}
	dir := filepath.Join(a.Dir, "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create tls dir: %w", err)
	}
	for name, data := range map[string][]byte{"ca.pem": caPEM, "cert.pem": certPEM, "key.pem": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	a.CAData, a.CAFile = caPEM, filepath.Join(dir, "ca.pem")
	a.tlsConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return nil
}

// waitReady binds as Administrator over LDAPS until it works, samba exits or time runs out.
func (a *AD) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	last := "no answer yet"
	for {
		conn, err := a.dial(ctx, a.AdminUPN, a.AdminPassword)
		if err == nil {
			_ = conn.Close()
			return nil
		}
		last = err.Error()
		select {
		case <-a.samba.done:
			return a.samba.failure("exited before LDAPS answered a bind (%v); last answer: %s", a.samba.err, last)
		case <-ctx.Done():
			return a.samba.failure("not ready: no LDAPS bind on %s (%v); last answer: %s", adLDAPSAddr, ctx.Err(), last)
		case <-time.After(adReadyPause):
		}
	}
}

// configureDomain relaxes password complexity and length (tests pick their passwords) and turns account
// lockout on after ADLockoutThreshold wrong passwords, so LockUser can lock an account.
func (a *AD) configureDomain(ctx context.Context) error {
	return a.withAdmin(ctx, func(c *ldap.Conn) error {
		m := ldap.NewModifyRequest(a.BaseDN, nil)
		m.Replace("pwdProperties", []string{"0"})
		m.Replace("minPwdLength", []string{"0"})
		m.Replace("pwdHistoryLength", []string{"0"})
		m.Replace("lockoutThreshold", []string{strconv.Itoa(ADLockoutThreshold)})
		if err := c.Modify(m); err != nil {
			return fmt.Errorf("set the domain's password policy: %w", err)
		}
		return nil
	})
}

// TLSConfig returns a client TLS config that trusts the AD's CA only.
func (a *AD) TLSConfig() *tls.Config { return a.tlsConfig.Clone() }

// dial connects over LDAPS and binds as user (a UPN or DN) unless user is empty.
func (a *AD) dial(ctx context.Context, user, password string) (*ldap.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := ldap.DialURL(a.URL, ldap.DialWithDialer(d), ldap.DialWithTLSConfig(a.TLSConfig()))
	if err != nil {
		return nil, err
	}
	conn.SetTimeout(30 * time.Second)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 30*time.Second {
		conn.SetTimeout(max(time.Until(dl), time.Millisecond))
	}
	if user != "" {
		if err := conn.Bind(user, password); err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

// withAdmin runs f on a fresh LDAPS connection bound as Administrator.
func (a *AD) withAdmin(ctx context.Context, f func(*ldap.Conn) error) error {
	conn, err := a.dial(ctx, a.AdminUPN, a.AdminPassword)
	if err != nil {
		return fmt.Errorf("bind as %s: %w", a.AdminUPN, err)
	}
	defer conn.Close()
	return f(conn)
}

// UserDN and GroupDN return where the helpers create a user or group named name.
func (a *AD) UserDN(name string) string  { return "CN=" + ldap.EscapeDN(name) + "," + a.UsersDN }
func (a *AD) GroupDN(name string) string { return "CN=" + ldap.EscapeDN(name) + "," + a.UsersDN }

// UPN returns the userPrincipalName the helpers give user sam.
func (a *AD) UPN(sam string) string { return sam + "@" + ADDNSDomain }

// CreateUser creates an enabled user with sAMAccountName sam, UPN sam@corp.example.com and
// password (any password: complexity is off).
func (a *AD) CreateUser(ctx context.Context, sam, password string) error {
	return a.withAdmin(ctx, func(c *ldap.Conn) error {
		req := ldap.NewAddRequest(a.UserDN(sam), nil)
		req.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user"})
		req.Attribute("sAMAccountName", []string{sam})
		req.Attribute("userPrincipalName", []string{a.UPN(sam)})
		req.Attribute("unicodePwd", []string{adPassword(password)})
		req.Attribute("userAccountControl", []string{"512"}) // NORMAL_ACCOUNT
		if err := c.Add(req); err != nil {
			return fmt.Errorf("create AD user %s: %w", sam, err)
		}
		return nil
	})
}

// CreateGroup creates a global security group named name.
func (a *AD) CreateGroup(ctx context.Context, name string) error {
	return a.withAdmin(ctx, func(c *ldap.Conn) error {
		req := ldap.NewAddRequest(a.GroupDN(name), nil)
		req.Attribute("objectClass", []string{"top", "group"})
		req.Attribute("sAMAccountName", []string{name})
		if err := c.Add(req); err != nil {
			return fmt.Errorf("create AD group %s: %w", name, err)
		}
		return nil
	})
}

// AddMembers adds users or groups (by name, as created by the helpers) to group.
func (a *AD) AddMembers(ctx context.Context, group string, members ...string) error {
	return a.withAdmin(ctx, func(c *ldap.Conn) error {
		dns := make([]string, len(members))
		for i, m := range members {
			dns[i] = a.UserDN(m) // users and groups share CN=Users
		}
		req := ldap.NewModifyRequest(a.GroupDN(group), nil)
		req.Add("member", dns)
		if err := c.Modify(req); err != nil {
			return fmt.Errorf("add members to AD group %s: %w", group, err)
		}
		return nil
	})
}

// DisableUser sets ACCOUNTDISABLE on user sam.
func (a *AD) DisableUser(ctx context.Context, sam string) error {
	return a.withAdmin(ctx, func(c *ldap.Conn) error {
		req := ldap.NewModifyRequest(a.UserDN(sam), nil)
		req.Replace("userAccountControl", []string{"514"}) // NORMAL_ACCOUNT | ACCOUNTDISABLE
		if err := c.Modify(req); err != nil {
			return fmt.Errorf("disable AD user %s: %w", sam, err)
		}
		return nil
	})
}

// ExpirePassword makes user sam's password expired ("must change at next logon").
func (a *AD) ExpirePassword(ctx context.Context, sam string) error {
	return a.withAdmin(ctx, func(c *ldap.Conn) error {
		req := ldap.NewModifyRequest(a.UserDN(sam), nil)
		req.Replace("pwdLastSet", []string{"0"})
		if err := c.Modify(req); err != nil {
			return fmt.Errorf("expire the password of AD user %s: %w", sam, err)
		}
		return nil
	})
}

// LockUser locks user sam out the way a directory does: ADLockoutThreshold binds with a
// wrong password.
func (a *AD) LockUser(ctx context.Context, sam string) error {
	for range ADLockoutThreshold {
		conn, err := a.dial(ctx, "", "")
		if err != nil {
			return fmt.Errorf("lock AD user %s: %w", sam, err)
		}
		err = conn.Bind(a.UPN(sam), "wrong-"+randomToken()[:8])
		_ = conn.Close()
		if err == nil {
			return fmt.Errorf("lock AD user %s: a wrong password was accepted", sam)
		}
	}
	return nil
}

// CreateNestedGroups builds n groups that user (created before) is in, directly or through
// nesting, deep and wide: the first min(n, 32) groups form a chain (group i holds group i-1,
// group 0 holds the user), and every further group holds one of the chain's groups, so the
// user's membership runs up to 33 levels deep and n wide. All groups go in with one ldapadd
// of an LDIF over LDAPS (a second per group with samba-tool). Names start with
// "ng-<user>-<n>-" and are returned in creation order.
func (a *AD) CreateNestedGroups(ctx context.Context, user string, n int) ([]string, error) {
	const chain = 32
	prefix := fmt.Sprintf("ng-%s-%d-", user, n)
	names := make([]string, n)
	var ldif strings.Builder
	for i := range n {
		names[i] = fmt.Sprintf("%s%04d", prefix, i)
		member := a.UserDN(user)
		switch {
		case i == 0:
		case i < chain:
			member = a.GroupDN(names[i-1])
		default:
			member = a.GroupDN(names[i%chain])
		}
		fmt.Fprintf(&ldif, "dn: %s\nobjectClass: top\nobjectClass: group\nsAMAccountName: %s\nmember: %s\n\n",
			a.GroupDN(names[i]), names[i], member)
	}
	path := filepath.Join(a.Dir, prefix+"groups.ldif")
	if err := os.WriteFile(path, []byte(ldif.String()), 0o600); err != nil {
		return nil, fmt.Errorf("write LDIF: %w", err)
	}
	defer os.Remove(path)
	cmd := exec.CommandContext(ctx, "ldapadd", "-H", a.URL, "-x", "-D", a.AdminUPN, "-w", a.AdminPassword, "-f", path)
	cmd.Env = append(os.Environ(), "LDAPTLS_CACERT="+a.CAFile, "LDAPTLS_REQCERT=demand")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ldapadd %d nested groups: %w\n%s", n, err, lastLines(string(out), 10))
	}
	return names, nil
}

// Stop stops samba, removes a temp state dir and releases the machine-wide lock.
func (a *AD) Stop() error {
	if a == nil {
		return nil
	}
	a.stopMu.Lock()
	defer a.stopMu.Unlock()
	var errs []error
	if a.samba != nil {
		errs = append(errs, a.samba.stop(adStopWait))
		a.samba = nil
	}
	if a.removeDir {
		if err := os.RemoveAll(a.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove state dir: %w", err))
		}
		a.removeDir = false
	}
	if a.lock != nil {
		_ = a.lock.Close() // closing the file drops the flock
		a.lock = nil
	}
	return errors.Join(errs...)
}

// adPassword encodes a password for unicodePwd: the quoted password in UTF-16LE.
func adPassword(pw string) string {
	u := utf16.Encode([]rune(`"` + pw + `"`))
	b := make([]byte, 2*len(u))
	for i, r := range u {
		binary.LittleEndian.PutUint16(b[2*i:], r)
	}
	return string(b)
}

// lockMachineWide takes an exclusive flock on name in os.TempDir(), polling until ctx ends.
func lockMachineWide(ctx context.Context, name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), name), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	for waiting := false; ; waiting = true {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("flock %s: %w", f.Name(), err)
		}
		if !waiting {
			fmt.Fprintf(os.Stderr, "testenv: another test binary runs the Samba AD; waiting for it to finish (lock %s)\n", f.Name())
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("another test binary holds %s: %w", f.Name(), ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
