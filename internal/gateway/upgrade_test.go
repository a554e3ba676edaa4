package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
	//lint:ignore SA1019 client-go v0.37 dialers still use apimachinery's httpstream types
	"k8s.io/apimachinery/pkg/util/httpstream"

	"github.com/kaccess/kaccess/internal/config"
)

// Who the upgrade tests are: a user with two groups, so group forwarding is visible.
const streamUser = "alice"

var streamGroups = []string{"test:devs", "test:oncall"}

// startPeerGateway starts a stream peer and a gateway whose only cluster is that peer.
func startPeerGateway(t *testing.T, mutate func(*config.Config)) (*streamPeer, *testGateway) {
	t.Helper()
	p := startStreamPeer(t)
	g := startGateway(t, func(c *config.Config) {
		c.Clusters = []config.Cluster{{Name: "peer", Server: p.URL, CAFile: p.CAFile, TokenFile: p.TokenFile}}
		if mutate != nil {
			mutate(c)
		}
	})
	return p, g
}

// podURL is the URL of a subresource of the peer's pod through the gateway.
func podURL(g *testGateway, subresource string, query url.Values) *url.URL {
	u, err := url.Parse(g.URL + "/api/v1/namespaces/" + peerNamespace + "/pods/" + peerPod + "/" + subresource)
	if err != nil {
		panic(err)
	}
	u.RawQuery = query.Encode()
	return u
}

// remoteCommandQuery is what client-go sends for PodExecOptions/PodAttachOptions.
func remoteCommandQuery(stdin bool, command ...string) url.Values {
	q := url.Values{"container": {peerContainer}, "stdout": {"true"}, "stderr": {"true"}}
	if stdin {
		q.Set("stdin", "true")
	}
	for _, c := range command {
		q.Add("command", c)
	}
	return q
}

// newExecutor builds client-go's executor for one of the two wire protocols.
func newExecutor(t *testing.T, rc *rest.Config, wire string, u *url.URL) remotecommand.Executor {
	t.Helper()
	var (
		ex  remotecommand.Executor
		err error
	)
	switch wire {
	case "spdy":
		ex, err = remotecommand.NewSPDYExecutor(rc, http.MethodPost, u)
	case "websocket":
		ex, err = remotecommand.NewWebSocketExecutor(rc, http.MethodGet, u.String())
	default:
		t.Fatalf("unknown wire %q", wire)
	}
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

// runRemoteCommand runs exec (command given) or attach (no command) and returns what came back.
func runRemoteCommand(t *testing.T, g *testGateway, token, wire string, stdin io.Reader, command ...string) (stdout, stderr string, err error) {
	t.Helper()
	sub := "exec"
	if len(command) == 0 {
		sub = "attach"
	}
	ex := newExecutor(t, g.restConfig(token), wire, podURL(g, sub, remoteCommandQuery(stdin != nil, command...)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Stderr: &errOut})
	return out.String(), errOut.String(), err
}

// wantUpgrade checks how the peer was asked to upgrade: "spdy" (SPDY/3.1 with the given
// X-Stream-Protocol-Version among those offered) or "websocket" (with the given subprotocol
// among those offered).
func wantUpgrade(t *testing.T, r peerRequest, wire, protocol string) {
	t.Helper()
	switch wire {
	case "spdy":
		if got := r.Header.Get("Upgrade"); !strings.EqualFold(got, "SPDY/3.1") {
			t.Errorf("%s: Upgrade %q at the peer, want SPDY/3.1", r.Path, got)
		}
		if got := r.Header.Values("X-Stream-Protocol-Version"); !slices.Contains(got, protocol) {
			t.Errorf("%s: X-Stream-Protocol-Version %q at the peer, want %s among them", r.Path, got, protocol)
		}
	case "websocket":
		if got := r.Header.Get("Upgrade"); !strings.EqualFold(got, "websocket") {
			t.Errorf("%s: Upgrade %q at the peer, want websocket", r.Path, got)
		}
		if got := webSocketProtocols(r.Header); !slices.Contains(got, protocol) {
			t.Errorf("%s: Sec-WebSocket-Protocol %q at the peer, want %s among them", r.Path, got, protocol)
		}
	}
}

func webSocketProtocols(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Sec-Websocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// wantForwardedAs checks that the peer saw the gateway's own credential and the user's identity
// exactly as the gateway sets it, and nothing of the client's credential.
func wantForwardedAs(t *testing.T, p *streamPeer, r peerRequest, user string, groups []string) {
	t.Helper()
	h := r.Header
	if got := h.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+p.token {
		t.Errorf("%s: Authorization at the peer is not the gateway's own token (%d values)", r.Path, len(got))
	}
	if got := h.Values("Impersonate-User"); !slices.Equal(got, []string{user}) {
		t.Errorf("%s: Impersonate-User %q, want %q", r.Path, got, user)
	}
	if got := h.Values("Impersonate-Uid"); !slices.Equal(got, []string{"uid-" + user}) {
		t.Errorf("%s: Impersonate-Uid %q, want uid-%s", r.Path, got, user)
	}
	gotGroups := slices.Sorted(slices.Values(h.Values("Impersonate-Group")))
	if wantGroups := slices.Sorted(slices.Values(groups)); !slices.Equal(gotGroups, wantGroups) {
		t.Errorf("%s: Impersonate-Group %q, want %q", r.Path, gotGroups, wantGroups)
	}
	extra := map[string][]string{}
	for k, v := range h {
		if rest, ok := strings.CutPrefix(k, "Impersonate-Extra-"); ok {
			key, err := url.PathUnescape(strings.ToLower(rest))
			if err != nil {
				t.Errorf("%s: extra header %q does not unescape: %v", r.Path, k, err)
			}
			extra[key] = v
		}
	}
	if got := extra["kaccess.io/source"]; !slices.Equal(got, []string{"test"}) {
		t.Errorf("%s: extra kaccess.io/source %q, want [test] (all extras: %v)", r.Path, got, extra)
	}
	if got := extra["kaccess.io/session-id-hash"]; len(got) != 1 || len(got[0]) != 16 {
		t.Errorf("%s: extra kaccess.io/session-id-hash %q, want one session hash", r.Path, got)
	}
	for _, proto := range webSocketProtocols(h) {
		if strings.HasPrefix(proto, "base64url.bearer.authorization.k8s.io.") {
			t.Errorf("%s: a bearer token reached the peer in Sec-WebSocket-Protocol", r.Path)
		}
	}
	if h.Get("Audit-Id") == "" {
		t.Errorf("%s: no Audit-Id at the peer", r.Path)
	}
}

// lastRequest returns the newest request the peer saw on a path ending with suffix.
func lastRequest(t *testing.T, p *streamPeer, suffix string) peerRequest {
	t.Helper()
	seen := p.requests(suffix)
	if len(seen) == 0 {
		t.Fatalf("the peer saw no request on %s", suffix)
	}
	return seen[len(seen)-1]
}

// exec over SPDY and over WebSocket v5: stdin in, stdout and stderr out, the exit code back.
func TestExecOverSPDYAndWebSocket(t *testing.T) {
	p, g := startPeerGateway(t, nil)
	token := g.mint(t, streamUser, streamGroups...)
	for _, tc := range []struct{ wire, protocol string }{
		{"spdy", "v4.channel.k8s.io"},      // the kubelet's newest SPDY protocol
		{"websocket", "v5.channel.k8s.io"}, // translated to SPDY by the peer, as kube-apiserver does
	} {
		t.Run(tc.wire, func(t *testing.T) {
			out, errOut, err := runRemoteCommand(t, g, token, tc.wire, nil, "echo", "hi", "there")
			if err != nil || out != "hi there\n" || errOut != "" {
				t.Fatalf("echo: stdout %q stderr %q err %v; want %q and no error", out, errOut, err, "hi there\n")
			}
			wantUpgrade(t, lastRequest(t, p, "/exec"), tc.wire, tc.protocol)
			wantForwardedAs(t, p, lastRequest(t, p, "/exec"), streamUser, streamGroups)
			if got := lastRequest(t, p, "/exec").Query["command"]; !slices.Equal(got, []string{"echo", "hi", "there"}) {
				t.Errorf("command at the peer %q", got)
			}

			in := strings.Repeat("stdin through the gateway\n", 2000) // 52 KB: several frames
			out, errOut, err = runRemoteCommand(t, g, token, tc.wire, strings.NewReader(in), "upper")
			if err != nil {
				t.Fatalf("upper: %v (stderr %q)", err, errOut)
			}
			if out != strings.ToUpper(in) {
				t.Errorf("upper: %d bytes of stdout, want %d upper-cased bytes", len(out), len(in))
			}
			if want := fmt.Sprintf("%s: upper copied %d bytes\n", peerStderrMarker, len(in)); errOut != want {
				t.Errorf("upper: stderr %q, want %q", errOut, want)
			}

			out, errOut, err = runRemoteCommand(t, g, token, tc.wire, nil, "exit", "3")
			var exitErr utilexec.CodeExitError
			if !errors.As(err, &exitErr) || exitErr.Code != 3 {
				t.Fatalf("exit 3: err %T %v, want exec.CodeExitError with code 3", err, err)
			}
			if want := peerStderrMarker + ": exiting with 3\n"; errOut != want || out != "" {
				t.Errorf("exit 3: stdout %q stderr %q, want stderr %q", out, errOut, want)
			}
		})
	}
}

// attach over SPDY and over WebSocket v5.
func TestAttachOverSPDYAndWebSocket(t *testing.T) {
	p, g := startPeerGateway(t, nil)
	token := g.mint(t, streamUser, streamGroups...)
	for _, tc := range []struct{ wire, protocol string }{
		{"spdy", "v4.channel.k8s.io"},
		{"websocket", "v5.channel.k8s.io"},
	} {
		t.Run(tc.wire, func(t *testing.T) {
			in := "attached over " + tc.wire + "\n"
			out, errOut, err := runRemoteCommand(t, g, token, tc.wire, strings.NewReader(in))
			if err != nil {
				t.Fatalf("attach: %v (stderr %q)", err, errOut)
			}
			if out != strings.ToUpper(in) {
				t.Errorf("attach: stdout %q, want %q", out, strings.ToUpper(in))
			}
			if want := peerStderrMarker + ": attached to main\n"; errOut != want {
				t.Errorf("attach: stderr %q, want %q", errOut, want)
			}
			r := lastRequest(t, p, "/attach")
			wantUpgrade(t, r, tc.wire, tc.protocol)
			wantForwardedAs(t, p, r, streamUser, streamGroups)
		})
	}
}

// port-forward over SPDY and tunneled as SPDY over WebSocket: bytes go to the pod's port and back.
func TestPortForwardOverSPDYAndWebSocketTunnel(t *testing.T) {
	p, g := startPeerGateway(t, nil)
	rc := g.restConfig(g.mint(t, streamUser, streamGroups...))
	u := podURL(g, "portforward", nil)
	for _, tc := range []struct {
		wire, protocol string
		dialer         func(t *testing.T) httpstream.Dialer
	}{
		{"spdy", "portforward.k8s.io", func(t *testing.T) httpstream.Dialer {
			transport, upgrader, err := spdy.RoundTripperFor(rc)
			if err != nil {
				t.Fatal(err)
			}
			return spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
		}},
		{"websocket", "SPDY/3.1+portforward.k8s.io", func(t *testing.T) httpstream.Dialer {
			d, err := portforward.NewSPDYOverWebsocketDialer(u, rc)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}},
	} {
		t.Run(tc.wire, func(t *testing.T) {
			before := len(p.requests("/portforward"))
			local := startPortForward(t, tc.dialer(t))
			for i := range 3 { // each connection is a new stream pair on the one upgraded connection
				msg := fmt.Sprintf("ping %d over %s\n", i, tc.wire)
				if got := roundTripTCP(t, local, msg); got != strings.ToUpper(msg) {
					t.Errorf("connection %d: got %q, want %q", i, got, strings.ToUpper(msg))
				}
			}
			seen := p.requests("/portforward")[before:]
			if len(seen) != 1 {
				t.Fatalf("the peer saw %d port-forward requests, want 1", len(seen))
			}
			wantUpgrade(t, seen[0], tc.wire, tc.protocol)
			wantForwardedAs(t, p, seen[0], streamUser, streamGroups)
		})
	}
}

// startPortForward forwards a local port to the pod's echo port until the test ends.
func startPortForward(t *testing.T, dialer httpstream.Dialer) string {
	t.Helper()
	stop, ready := make(chan struct{}), make(chan struct{})
	logs := &lockedWriter{w: &bytes.Buffer{}}
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", peerEchoPort)}, stop, ready, logs, logs)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- pf.ForwardPorts() }()
	t.Cleanup(func() {
		close(stop)
		if err := <-done; err != nil {
			t.Errorf("ForwardPorts: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		done <- err
		t.Fatalf("port-forward ended before it was ready: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("port-forward not ready after 30s\n%s", logs)
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("ports %v, %v", ports, err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0].Local)
}

// roundTripTCP sends msg to addr and reads back as many bytes.
func roundTripTCP(t *testing.T, addr, msg string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	return string(buf)
}

// A browser-style WebSocket exec carries its token only in Sec-WebSocket-Protocol: the gateway
// accepts it there, removes it, and keeps the real subprotocols for the API server.
func TestExecWebSocketTokenInSubprotocol(t *testing.T) {
	p, g := startPeerGateway(t, nil)
	token := g.mint(t, streamUser, streamGroups...)
	bearer := func(tok string) string {
		return "base64url.bearer.authorization.k8s.io." + base64.RawURLEncoding.EncodeToString([]byte(tok))
	}
	u := podURL(g, "exec", remoteCommandQuery(true, "upper"))
	u.Scheme = "wss"
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(g.CAPEM)
	dial := func(protocols []string, header http.Header) (*websocket.Conn, *http.Response, error) {
		d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, Subprotocols: protocols, HandshakeTimeout: 10 * time.Second}
		return d.Dial(u.String(), header)
	}

	t.Run("token accepted and removed", func(t *testing.T) {
		conn, resp, err := dial([]string{"v5.channel.k8s.io", bearer(token), "v4.channel.k8s.io"}, nil)
		if err != nil {
			t.Fatalf("dial: %v (response %v)", err, statusOf(resp))
		}
		defer conn.Close()
		if resp.StatusCode != http.StatusSwitchingProtocols || conn.Subprotocol() != "v5.channel.k8s.io" {
			t.Fatalf("status %d, subprotocol %q; want 101 with v5.channel.k8s.io", resp.StatusCode, conn.Subprotocol())
		}
		r := lastRequest(t, p, "/exec")
		if got := webSocketProtocols(r.Header); !slices.Equal(got, []string{"v5.channel.k8s.io", "v4.channel.k8s.io"}) {
			t.Errorf("subprotocols at the peer %q, want exactly [v5.channel.k8s.io v4.channel.k8s.io]", redactBearer(got))
		}
		wantForwardedAs(t, p, r, streamUser, streamGroups)
		for _, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, token) || strings.Contains(v, base64.RawURLEncoding.EncodeToString([]byte(token))) {
					t.Fatal("the session token reached the peer")
				}
			}
		}

		// Speak v5.channel.k8s.io by hand: stdin on channel 0, then close it (255, 0).
		in := "by hand over v5\n"
		for _, msg := range [][]byte{append([]byte{0}, in...), {255, 0}} {
			if err := conn.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				t.Fatal(err)
			}
		}
		_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		var stdout, stderr bytes.Buffer
		var status metav1.Status
		for status.Status == "" {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("reading: %v (stdout so far %q)", err, stdout.String())
			}
			if len(msg) == 0 {
				continue
			}
			switch msg[0] {
			case 1:
				stdout.Write(msg[1:])
			case 2:
				stderr.Write(msg[1:])
			case 3:
				if err := json.Unmarshal(msg[1:], &status); err != nil {
					t.Fatalf("status %q: %v", msg[1:], err)
				}
			}
		}
		if status.Status != metav1.StatusSuccess || stdout.String() != strings.ToUpper(in) {
			t.Errorf("status %+v, stdout %q; want Success and %q", status, stdout.String(), strings.ToUpper(in))
		}
		if !strings.HasPrefix(stderr.String(), peerStderrMarker) {
			t.Errorf("stderr %q, want the runtime's marker", stderr.String())
		}
	})

	for _, tc := range []struct {
		name      string
		protocols []string
		header    http.Header
		want      int
	}{
		{"bad token", []string{"v5.channel.k8s.io", bearer("not-a-session-token")}, nil, http.StatusUnauthorized},
		{"token not base64url", []string{"v5.channel.k8s.io", "base64url.bearer.authorization.k8s.io.!!"}, nil, http.StatusUnauthorized},
		{"no token at all", []string{"v5.channel.k8s.io"}, nil, http.StatusUnauthorized},
		{"token twice", []string{"v5.channel.k8s.io", bearer(token)}, http.Header{"Authorization": {"Bearer " + token}}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(p.requests("/exec"))
			conn, resp, err := dial(tc.protocols, tc.header)
			if err == nil {
				conn.Close()
				t.Fatal("the upgrade succeeded")
			}
			if resp == nil || resp.StatusCode != tc.want {
				t.Fatalf("got %v (%v), want status %d", statusOf(resp), err, tc.want)
			}
			if n := len(p.requests("/exec")); n != before {
				t.Errorf("the refused request reached the peer")
			}
		})
	}
	if logs := g.logs.String(); strings.Contains(logs, token) || strings.Contains(logs, base64.RawURLEncoding.EncodeToString([]byte(token))) {
		t.Error("the session token appears in the gateway's log")
	}
}

// redactBearer keeps tokens out of failure messages.
func redactBearer(protocols []string) []string {
	out := make([]string, len(protocols))
	for i, p := range protocols {
		if strings.HasPrefix(p, "base64url.bearer.authorization.k8s.io.") {
			p = "base64url.bearer.authorization.k8s.io.<redacted>"
		}
		out[i] = p
	}
	return out
}

func statusOf(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	return resp.Status
}

// An exec session lives on past timeouts.request, which still cuts ordinary requests.
func TestExecOutlivesRequestTimeout(t *testing.T) {
	p, g := startPeerGateway(t, func(c *config.Config) { c.Timeouts.Request = config.Duration(2 * time.Second) })
	token := g.mint(t, streamUser, streamGroups...)

	// The timeout is in force: an ordinary request slower than it is cut.
	req, _ := http.NewRequest(http.MethodGet, g.URL+"/api/v1/namespaces/"+peerNamespace+"/pods/"+peerSlowPod, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	start := time.Now()
	resp, err := g.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || time.Since(start) > peerSlowDelay {
		t.Fatalf("slow GET: %d after %v (%s); want 504 after about 2s", resp.StatusCode, time.Since(start), body)
	}

	for _, wire := range []string{"spdy", "websocket"} {
		t.Run(wire, func(t *testing.T) {
			ex := newExecutor(t, g.restConfig(token), wire, podURL(g, "exec", remoteCommandQuery(true, "upper")))
			stdinR, stdinW := io.Pipe()
			stdoutR, stdoutW := io.Pipe()
			var stderr lockedWriter
			stderr.w = &bytes.Buffer{}
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				err := ex.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdin: stdinR, Stdout: stdoutW, Stderr: &stderr})
				// Unblock the test's pipes whatever happened.
				stdinR.CloseWithError(io.ErrClosedPipe)
				stdoutW.CloseWithError(io.ErrUnexpectedEOF)
				done <- err
			}()
			lines := bufio.NewReader(stdoutR)
			echo := func(line string) {
				t.Helper()
				got := make(chan string, 1)
				go func() {
					if _, err := io.WriteString(stdinW, line); err != nil {
						got <- "writing stdin: " + err.Error()
						return
					}
					s, err := lines.ReadString('\n')
					if err != nil {
						s += "reading stdout: " + err.Error()
					}
					got <- s
				}()
				select {
				case s := <-got:
					if s != strings.ToUpper(line) {
						t.Fatalf("after %v: got %q, want %q", time.Since(start).Round(time.Millisecond), s, strings.ToUpper(line))
					}
				case err := <-done:
					t.Fatalf("after %v the exec ended (%v) before echoing %q", time.Since(start).Round(time.Millisecond), err, line)
				case <-time.After(10 * time.Second):
					t.Fatalf("no echo of %q", line)
				}
			}
			echo("before the timeout\n")
			time.Sleep(3 * time.Second) // longer than timeouts.request
			echo("after the timeout\n")
			stdinW.Close()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exec ended with %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("exec did not end after stdin closed")
			}
			if elapsed := time.Since(start); elapsed < 3*time.Second {
				t.Fatalf("session lasted only %v", elapsed)
			}
			if want := fmt.Sprintf("%s: upper copied %d bytes\n", peerStderrMarker, len("before the timeout\nafter the timeout\n")); stderr.String() != want {
				t.Errorf("stderr %q, want %q", stderr.String(), want)
			}
			wantUpgrade(t, lastRequest(t, p, "/exec"), wire, map[string]string{"spdy": "v4.channel.k8s.io", "websocket": "v5.channel.k8s.io"}[wire])
		})
	}
}
