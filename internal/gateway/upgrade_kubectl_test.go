package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// kubectlStreams runs the real kubectl with extra environment and stdin.
func kubectlStreams(t *testing.T, kubeconfig string, env []string, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(append(os.Environ(), "KUBECACHEDIR="+t.TempDir()), env...)
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		t.Fatalf("kubectl %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// The real kubectl exec works through the gateway over WebSocket (its default) and over SPDY.
func TestKubectlExecThroughGateway(t *testing.T) {
	p, g := startPeerGateway(t, nil)
	kc := g.kubeconfig(t, streamUser, g.mint(t, streamUser, streamGroups...))
	for _, tc := range []struct{ wire, env, protocol string }{
		{"websocket", "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true", "v5.channel.k8s.io"},
		{"spdy", "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false", "v4.channel.k8s.io"},
	} {
		t.Run(tc.wire, func(t *testing.T) {
			env := []string{tc.env}
			before := len(p.requests("/exec"))
			in := "typed into kubectl\n"
			out, errOut, code := kubectlStreams(t, kc, env, in, "exec", "-i", "-n", peerNamespace, peerPod, "-c", peerContainer, "--", "upper")
			if code != 0 || out != strings.ToUpper(in) || !strings.Contains(errOut, peerStderrMarker+": upper copied 19 bytes") {
				t.Fatalf("kubectl exec upper: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			out, errOut, code = kubectlStreams(t, kc, env, "", "exec", "-n", peerNamespace, peerPod, "--", "exit", "7")
			if code != 7 || !strings.Contains(errOut, "command terminated with exit code 7") || !strings.Contains(errOut, peerStderrMarker+": exiting with 7") {
				t.Fatalf("kubectl exec exit 7: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			// Exactly the two upgrades, both in the chosen protocol: no fallback hid a failure.
			seen := p.requests("/exec")[before:]
			if len(seen) != 2 {
				t.Fatalf("the peer saw %d exec requests, want 2 (a fallback would add some)", len(seen))
			}
			for _, r := range seen {
				wantUpgrade(t, r, tc.wire, tc.protocol)
				wantForwardedAs(t, p, r, streamUser, streamGroups)
			}
		})
	}
}

// The real kubectl port-forward works through the gateway, tunneled over WebSocket and over SPDY.
func TestKubectlPortForwardThroughGateway(t *testing.T) {
	p, g := startPeerGateway(t, nil)
	kc := g.kubeconfig(t, streamUser, g.mint(t, streamUser, streamGroups...))
	forwarding := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> 80`)
	for _, tc := range []struct{ wire, env, protocol string }{
		{"websocket", "KUBECTL_PORT_FORWARD_WEBSOCKETS=true", "SPDY/3.1+portforward.k8s.io"},
		{"spdy", "KUBECTL_PORT_FORWARD_WEBSOCKETS=false", "portforward.k8s.io"},
	} {
		t.Run(tc.wire, func(t *testing.T) {
			before := len(p.requests("/portforward"))
			cmd := exec.Command("kubectl", "--kubeconfig", kc, "port-forward", "-n", peerNamespace, "pod/"+peerPod, "--address", "127.0.0.1", ":80")
			cmd.Env = append(os.Environ(), "KUBECACHEDIR="+t.TempDir(), tc.env)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			errOut := &lockedWriter{w: &bytes.Buffer{}}
			cmd.Stderr = errOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			})
			port := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if m := forwarding.FindStringSubmatch(sc.Text()); m != nil {
						port <- m[1]
					}
				}
			}()
			var local string
			select {
			case local = <-port:
			case <-time.After(30 * time.Second):
				t.Fatalf("kubectl port-forward did not start forwarding; stderr:\n%s", errOut)
			}
			for i := range 2 {
				msg := fmt.Sprintf("kubectl forwarded %d over %s\n", i, tc.wire)
				if got := roundTripTCP(t, "127.0.0.1:"+local, msg); got != strings.ToUpper(msg) {
					t.Errorf("got %q, want %q", got, strings.ToUpper(msg))
				}
			}
			seen := p.requests("/portforward")[before:]
			if len(seen) != 1 {
				t.Fatalf("the peer saw %d port-forward requests, want 1 (a fallback would add one); stderr:\n%s", len(seen), errOut)
			}
			wantUpgrade(t, seen[0], tc.wire, tc.protocol)
			wantForwardedAs(t, p, seen[0], streamUser, streamGroups)
		})
	}
}
