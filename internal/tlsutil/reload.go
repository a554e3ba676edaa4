package tlsutil

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// Reloader serves a certificate from files and picks up a renewed pair (cert-manager, a mounted
// Secret) without a restart. A broken renewal keeps the last good pair and is reported once.
type Reloader struct {
	certFile, keyFile string
	checkEvery        time.Duration
	onError           func(error)

	mu        sync.Mutex
	cert      *tls.Certificate
	modTime   time.Time
	checkedAt time.Time
}

// NewReloader loads the pair once (an error here stops the start) and returns the reloader.
func NewReloader(certFile, keyFile string, onError func(error)) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, checkEvery: 10 * time.Second, onError: onError}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reloader) load() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert = &cert
	r.modTime = r.newestModTime()
	return nil
}

func (r *Reloader) newestModTime() time.Time {
	var t time.Time
	for _, f := range []string{r.certFile, r.keyFile} {
		if st, err := os.Stat(f); err == nil && st.ModTime().After(t) {
			t = st.ModTime()
		}
	}
	return t
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refresh()
	return r.cert, nil
}

// NotAfter is when the certificate being served expires (after picking up a renewal, as a
// handshake would): what the certificate-expiry alert watches.
func (r *Reloader) NotAfter() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refresh()
	if r.cert.Leaf == nil {
		return time.Time{}
	}
	return r.cert.Leaf.NotAfter
}

// refresh reloads the pair when its files changed, at most once per checkEvery. r.mu is held.
func (r *Reloader) refresh() {
	now := time.Now()
	if now.Sub(r.checkedAt) < r.checkEvery {
		return
	}
	r.checkedAt = now
	if m := r.newestModTime(); m.After(r.modTime) {
		previous := r.cert
		if err := r.load(); err != nil {
			r.cert, r.modTime = previous, m
			if r.onError != nil {
				r.onError(err)
			}
		}
	}
}
