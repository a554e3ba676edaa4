package revocation

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kaccess/kaccess/internal/session"
	"github.com/kaccess/kaccess/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.RunWithCluster(m)) }

// Two replicas share keys and the revocations ConfigMap, with the gateway's shipped RBAC: a
// logout at one ends the session at the other.
func TestLogoutAtOneReplicaEndsTheSessionAtAll(t *testing.T) {
	c := testenv.Shared(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := kubernetes.NewForConfigOrDie(c.GatewayConfig())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys := t.TempDir()
	replica := func() *session.Manager {
		store, err := NewConfigMapStore(ctx, client, "kaccess-system", "kaccess-revocations", log)
		if err != nil {
			t.Fatal(err)
		}
		m, err := session.NewManager(session.Config{Issuer: "kaccess", KeysDir: keys, Revocations: store})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b := replica(), replica()
	token, claims, err := a.Mint(ctx, session.Claims{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Verify(ctx, token); err != nil {
		t.Fatalf("replica b rejects a fresh token: %v", err)
	}
	if err := b.Revoke(ctx, claims.SessionID, claims.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Verify(ctx, token); err == nil {
		t.Fatal("the replica that revoked still accepts the token")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := a.Verify(ctx, token)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("replica a still accepts the token 5 s after the logout at replica b")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A replica started later loads the revocation before it serves.
	if _, err := replica().Verify(ctx, token); err == nil {
		t.Fatal("a new replica accepts a revoked token")
	}
	// Other sessions are untouched.
	other, _, _ := a.Mint(ctx, session.Claims{User: "bob"})
	if _, err := b.Verify(ctx, other); err != nil {
		t.Fatalf("an unrelated session was affected: %v", err)
	}
}
