package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
)

// refreshMargin renews a session this long before it expires, so a kubectl command that starts
// just before expiry does not fail half-way.
const refreshMargin = time.Minute

// Relogin logs in again for an expired session, or says why it cannot (no terminal).
type Relogin func(ctx context.Context, expired *Session) (*Session, error)

// WriteCredential prints the ExecCredential kubectl asks its plugin for: the kept session's
// token with its expiry. An expired or missing session is renewed through relogin, under a lock,
// so parallel kubectl calls ask the person only once.
func WriteCredential(ctx context.Context, out io.Writer, store Store, server string, now time.Time, relogin Relogin) error {
	unlock, err := store.Lock(server)
	if err != nil {
		return err
	}
	defer unlock()
	sess, err := store.Load(server)
	if err != nil && !errors.Is(err, ErrNoSession) {
		return err
	}
	if sess == nil || !now.Add(refreshMargin).Before(sess.ExpiresAt) {
		if relogin == nil {
			return notLoggedIn(server, sess)
		}
		fresh, err := relogin(ctx, sess)
		if err != nil {
			return err
		}
		if err := store.Save(fresh); err != nil {
			return err
		}
		sess = fresh
	}
	expiry := metav1.NewTime(sess.ExpiresAt)
	cred := clientauthv1.ExecCredential{
		TypeMeta: metav1.TypeMeta{APIVersion: "client.authentication.k8s.io/v1", Kind: "ExecCredential"},
		Status:   &clientauthv1.ExecCredentialStatus{Token: sess.Token, ExpirationTimestamp: &expiry},
	}
	return json.NewEncoder(out).Encode(cred)
}

func notLoggedIn(server string, sess *Session) error {
	if sess == nil {
		return fmt.Errorf("not logged in to %s: run `kaccess login --server %s`", server, server)
	}
	return fmt.Errorf("the session for %s expired at %s: run `kaccess login --server %s`",
		server, sess.ExpiresAt.Local().Format(time.RFC1123), server)
}
