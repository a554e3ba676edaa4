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

func TestKeysRotateKeepsOldKeys(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "keys")
	run := func(args ...string) string {
		var out, errOut bytes.Buffer
		cmd := newRootCommand(&out, &errOut)
		cmd.SetArgs(append(args, "--keys-dir", dir))
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.String()
	}
	first := run("keys", "rotate")
	if strings.Count(first, "true") != 1 || strings.Count(first, "\n") != 2 {
		t.Fatalf("first rotate made more than one key:\n%s", first)
	}
	second := run("keys", "rotate")
	lines := strings.Split(strings.TrimSpace(second), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[1], "false") || !strings.HasSuffix(lines[2], "true") {
		t.Fatalf("after the second rotate want the old key kept and the new one signing:\n%s", second)
	}
	if out := run("keys", "prune"); !strings.Contains(out, "nothing to prune") {
		t.Fatalf("prune removed a key still within a token's life:\n%s", out)
	}
}
