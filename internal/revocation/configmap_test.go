package revocation

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
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

// A replica that starts while its API server is out of reach starts anyway, refuses every
// session (a revoked one could otherwise pass), says so in its error, and loads the list and
// accepts sessions once the API server answers. It used to fail to start at all, so a replica
// could not come back during an API server restart (found by make soak).
func TestStartsWhileTheAPIServerIsDownAndFailsClosedUntilLoaded(t *testing.T) {
	c := testenv.Shared(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old := loadWait
	loadWait = 200 * time.Millisecond
	defer func() { loadWait = old }()

	// A port that refuses connections until the test forwards it to the real API server.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	cfg := c.GatewayConfig()
	upstream := strings.TrimPrefix(cfg.Host, "https://")
	cfg.Host = "https://" + addr
	cfg.Timeout = 2 * time.Second
	store, err := NewConfigMapStore(ctx, kubernetes.NewForConfigOrDie(cfg), "kaccess-system", "kaccess-revocations", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("a replica must start while its API server is down: %v", err)
	}
	m, err := session.NewManager(session.Config{Issuer: "kaccess", KeysDir: t.TempDir(), Revocations: store})
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := m.Mint(ctx, session.Claims{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Verify(ctx, token); !errors.Is(err, session.ErrRevocationsUnknown) {
		t.Fatalf("before the list is loaded: %v; want ErrRevocationsUnknown", err)
	}

	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("take the port back: %v", err)
	}
	defer lis.Close()
	go forward(lis, upstream)
	deadline := time.Now().Add(20 * time.Second)
	for !store.Loaded() {
		if time.Now().After(deadline) {
			t.Fatal("the list was not loaded 20 s after the API server became reachable")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := m.Verify(ctx, token); err != nil {
		t.Fatalf("after the list loaded: %v", err)
	}
}

// forward relays each connection accepted on lis to addr, until lis is closed.
func forward(lis net.Listener, addr string) {
	for {
		in, err := lis.Accept()
		if err != nil {
			return
		}
		go func() {
			defer in.Close()
			out, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer out.Close()
			go func() { _, _ = io.Copy(out, in) }()
			_, _ = io.Copy(in, out)
		}()
	}
}
