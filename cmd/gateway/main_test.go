package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckConfigListsEveryProblem(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("clusters:\n  - name: Prod\n    tokenFile: /t\nsession:\n  ttl: 48h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd := newRootCommand(&out, &errOut)
	cmd.SetArgs([]string{"check-config", "--config", bad})
	err := cmd.Execute()
	if err == nil {
		t.Fatal("a broken config passed")
	}
	for _, want := range []string{"3 problems", "clusters[0].name", "clusters[0].server: required with tokenFile", "session.ttl"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("report lacks %q:\n%v", want, err)
		}
	}

	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("stateDir: "+dir+"\nclusters:\n  - name: prod\n    inCluster: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd = newRootCommand(&out, &errOut)
	cmd.SetArgs([]string{"check-config", "-c", good})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "configuration is valid") {
		t.Fatalf("output %q", out.String())
	}
}

func TestTokenRefusesSystemMasters(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	cmd := newRootCommand(&out, &errOut)
	cmd.SetArgs([]string{"token", "--user", "x", "--group", "system:masters"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "never grants system:masters") {
		t.Fatalf("err = %v", err)
	}
}
