package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"time"
)

// Session is what `kaccess login` keeps for one gateway, in a file only its owner can read.
type Session struct {
	Server    string    `json:"server"`
	Source    string    `json:"source"`
	Username  string    `json:"username"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
	// CAData pins the gateway's CA for the API calls (login, whoami, logout).
	CAData []byte `json:"caData,omitempty"`
	// For an OIDC source: where to renew the login without asking, and with what.
	IssuerURL    string `json:"issuerURL,omitempty"`
	ClientID     string `json:"clientID,omitempty"`
	IssuerCAData []byte `json:"issuerCAData,omitempty"`
	RefreshToken string `json:"refreshToken,omitempty"`
}

// Store keeps one Session per gateway under Dir (default ~/.kaccess/sessions).
type Store struct{ Dir string }

// DefaultStore is under $KACCESS_HOME, else ~/.kaccess.
func DefaultStore() (Store, error) {
	home := os.Getenv("KACCESS_HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return Store{}, fmt.Errorf("find the home directory (or set KACCESS_HOME): %w", err)
		}
		home = filepath.Join(h, ".kaccess")
	}
	return Store{Dir: filepath.Join(home, "sessions")}, nil
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// fileFor names the session file of a gateway server URL.
func (s Store) fileFor(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("server %q: want the gateway's https:// URL", server)
	}
	name := unsafeChars.ReplaceAllString(u.Host+u.Path, "_")
	return filepath.Join(s.Dir, name+".json"), nil
}

// ErrNoSession means nobody logged in to that gateway from this account yet.
var ErrNoSession = errors.New("no session")

// Load returns the kept session of server.
func (s Store) Load(server string) (*Session, error) {
	path, err := s.fileFor(server)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoSession
	}
	if err != nil {
		return nil, err
	}
	var sess Session
	if err := json.Unmarshal(data, &sess); err != nil {
		return nil, fmt.Errorf("session file %s is damaged (%v): run `kaccess login` again", path, err)
	}
	return &sess, nil
}

// Save writes the session atomically with mode 0600.
func (s Store) Save(sess *Session) error {
	path, err := s.fileFor(sess.Server)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(sess, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.Dir, ".session-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Delete forgets the session of server.
func (s Store) Delete(server string) error {
	path, err := s.fileFor(server)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Lock takes an exclusive lock for server's session, so parallel kubectl calls running
// `kaccess credential` do not log in twice or race on the file. Call the returned func to unlock.
func (s Store) Lock(server string) (func(), error) {
	path, err := s.fileFor(server)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// OnlyServer returns the gateway of the single kept session, so commands need no --server
// when someone uses one gateway. With none or several it says what to pass.
func (s Store) OnlyServer() (string, error) {
	files, err := filepath.Glob(filepath.Join(s.Dir, "*.json"))
	if err != nil {
		return "", err
	}
	var servers []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var sess Session
		if json.Unmarshal(data, &sess) == nil && sess.Server != "" {
			servers = append(servers, sess.Server)
		}
	}
	switch len(servers) {
	case 1:
		return servers[0], nil
	case 0:
		return "", errors.New("not logged in to any gateway: run `kaccess login --server https://...` first")
	default:
		return "", fmt.Errorf("logged in to %d gateways (%v): pass --server or set KACCESS_SERVER", len(servers), servers)
	}
}
