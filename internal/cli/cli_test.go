package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const server = "https://gw.example.com:6443"

func TestWriteKubeconfigMergesAndKubectlReadsIt(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config")
	existing := clientcmdapi.NewConfig()
	existing.Clusters["prod"] = &clientcmdapi.Cluster{Server: "https://prod:6443"}
	existing.AuthInfos["prod"] = &clientcmdapi.AuthInfo{Token: "keep-me"}
	existing.Contexts["prod"] = &clientcmdapi.Context{Cluster: "prod", AuthInfo: "prod"}
	existing.CurrentContext = "prod"
	if err := clientcmd.WriteToFile(*existing, path); err != nil {
		t.Fatal(err)
	}
	written, ctxName, err := WriteKubeconfig(KubeconfigOptions{Path: path, Server: server, CAData: []byte("CA"), Executable: "/usr/local/bin/kaccess", Namespace: "dev", Switch: true})
	if err != nil {
		t.Fatal(err)
	}
	if written != path || ctxName != "kaccess-gw.example.com-6443" {
		t.Fatalf("wrote %s context %s", written, ctxName)
	}
	got, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.AuthInfos["prod"].Token != "keep-me" || got.CurrentContext != ctxName {
		t.Fatalf("merge lost the existing entries or did not switch: current %q", got.CurrentContext)
	}
	exe := got.AuthInfos[ctxName].Exec
	if exe == nil || exe.APIVersion != "client.authentication.k8s.io/v1" || exe.Command != "/usr/local/bin/kaccess" ||
		strings.Join(exe.Args, " ") != "credential --server "+server || string(got.Clusters[ctxName].CertificateAuthorityData) != "CA" {
		t.Fatalf("exec plugin entry: %+v", exe)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %v", st.Mode().Perm())
	}
	out, err := exec.Command("kubectl", "--kubeconfig", path, "config", "get-contexts", "-o", "name").CombinedOutput()
	if err != nil || !strings.Contains(string(out), ctxName) || !strings.Contains(string(out), "prod") {
		t.Fatalf("kubectl config get-contexts: %v %s", err, out)
	}
}

func TestWriteCredential(t *testing.T) {
	t.Parallel()
	store := Store{Dir: t.TempDir()}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

	// Not logged in, nobody to ask: a message that says what to run.
	err := WriteCredential(context.Background(), &bytes.Buffer{}, store, server, now, nil)
	if err == nil || !strings.Contains(err.Error(), "kaccess login --server "+server) {
		t.Fatalf("err = %v", err)
	}
	if err := store.Save(&Session{Server: server, Token: "tok-1", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteCredential(context.Background(), &out, store, server, now, nil); err != nil {
		t.Fatal(err)
	}
	var cred clientauthv1.ExecCredential
	if err := json.Unmarshal(out.Bytes(), &cred); err != nil {
		t.Fatal(err)
	}
	if cred.Kind != "ExecCredential" || cred.Status.Token != "tok-1" || !cred.Status.ExpirationTimestamp.Time.Equal(now.Add(time.Hour)) {
		t.Fatalf("credential %s", out.String())
	}
	// Within the refresh margin the session counts as expired.
	err = WriteCredential(context.Background(), &bytes.Buffer{}, store, server, now.Add(time.Hour-30*time.Second), nil)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("err = %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(store.Dir, "*.json"))
	for _, f := range files {
		if st, _ := os.Stat(f); st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
	}
}

// Parallel kubectl calls with an expired session log in once, not once each.
func TestWriteCredentialReloginsOnceUnderLock(t *testing.T) {
	t.Parallel()
	store := Store{Dir: t.TempDir()}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var logins atomic.Int32
	relogin := func(_ context.Context, _ *Session) (*Session, error) {
		logins.Add(1)
		time.Sleep(50 * time.Millisecond) // a person typing, while others wait on the lock
		return &Session{Server: server, Token: "fresh", ExpiresAt: now.Add(8 * time.Hour)}, nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- WriteCredential(context.Background(), &bytes.Buffer{}, store, server, now, relogin) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := logins.Load(); n != 1 {
		t.Fatalf("%d logins for 8 parallel calls, want 1", n)
	}
	failing := func(context.Context, *Session) (*Session, error) { return nil, errors.New("no terminal") }
	if err := WriteCredential(context.Background(), &bytes.Buffer{}, store, server, now.Add(9*time.Hour), failing); err == nil {
		t.Fatal("expired session without relogin passed")
	}
}

func TestStoreRejectsNonHTTPSServers(t *testing.T) {
	t.Parallel()
	store := Store{Dir: t.TempDir()}
	for _, s := range []string{"http://gw", "gw:6443", "https://"} {
		if err := store.Save(&Session{Server: s}); err == nil {
			t.Errorf("saved a session for %q", s)
		}
	}
}
