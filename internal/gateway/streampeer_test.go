package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apimachineryproxy "k8s.io/apimachinery/pkg/util/proxy"
	"k8s.io/apimachinery/pkg/version"
	apiserverproxy "k8s.io/apiserver/pkg/util/proxy"
	kubeletportforward "k8s.io/cri-streaming/pkg/streaming/portforward"
	kubeletremotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	utilexec "k8s.io/utils/exec"
)

// The stream peer stands in for a kube-apiserver with one node behind it, because there is no
// kubelet on these machines and exec, attach and port-forward need one. Both halves run the real
// Kubernetes code for their side of the wire:
//
//   - its front is what kube-apiserver 1.37 puts before a kubelet (pkg/registry/core/pod/rest):
//     apimachinery's UpgradeAwareHandler hands SPDY upgrades through; k8s.io/apiserver's
//     StreamTranslatorHandler turns WebSocket v5.channel.k8s.io exec/attach into SPDY towards
//     the node; its TunnelingHandler unwraps port-forward tunneled as SPDY over WebSocket;
//   - its "kubelet" serves with the kubelet's own streaming code (k8s.io/cri-streaming
//     ServeExec, ServeAttach, ServePortForward) over a fake container runtime.
//
// The front checks the gateway's own token (the dummy one in TokenFile) and records every
// request as it arrived, so tests can check the identity headers the gateway set and that no
// client credential got through.
type streamPeer struct {
	URL       string
	CAFile    string
	TokenFile string
	token     string

	mu   sync.Mutex
	seen []peerRequest
}

// peerRequest is one request as the peer's front saw it.
type peerRequest struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
}

// The one pod the peer knows, and what its fake runtime does.
const (
	peerNamespace = "streams"
	peerPod       = "web"
	peerSlowPod   = "slow" // its GET answers after peerSlowDelay, to show ordinary timeouts bite
	peerSlowDelay = 4 * time.Second
	peerContainer = "main"
	// peerEchoPort answers every chunk sent to it upper-cased (so a loop that never left the
	// client would be caught); other ports are closed.
	peerEchoPort = 80
	// peerStderrMarker starts every line the fake runtime writes to stderr.
	peerStderrMarker = "fake-runtime-stderr"
)

// startStreamPeer serves the peer over TLS for the test's lifetime.
func startStreamPeer(t testing.TB) *streamPeer {
	t.Helper()
	kubelet := httptest.NewServer(newFakeKubelet())
	t.Cleanup(kubelet.Close)
	kubeletURL, err := url.Parse(kubelet.URL)
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	p := &streamPeer{token: "peer-gateway-" + hex.EncodeToString(secret)}
	srv := httptest.NewUnstartedServer(p.handler(kubeletURL))
	// Like kube-apiserver, offer HTTP/2: the gateway must still upgrade over HTTP/1.1.
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	p.URL = srv.URL
	p.CAFile = filepath.Join(dir, "peer-ca.crt")
	p.TokenFile = filepath.Join(dir, "peer-token")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p.CAFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.TokenFile, []byte(p.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// requests returns the requests seen so far whose path ends with suffix.
func (p *streamPeer) requests(suffix string) []peerRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []peerRequest
	for _, r := range p.seen {
		if strings.HasSuffix(r.Path, suffix) {
			out = append(out, r)
		}
	}
	return out
}

func (p *streamPeer) record(r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, peerRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone()})
}

// handler is the API server front: record, authenticate the gateway, route.
func (p *streamPeer) handler(kubelet *url.URL) http.Handler {
	// One transport to the node, as kube-apiserver keeps one per kubelet.
	toKubelet := &http.Transport{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		peerJSON(w, http.StatusOK, version.Info{Major: "1", Minor: "37", GitVersion: "v1.37.2-streampeer"})
	})
	// Enough discovery for kubectl to map "pods" (legacy, non-aggregated form).
	mux.HandleFunc("GET /api", func(w http.ResponseWriter, r *http.Request) {
		peerJSON(w, http.StatusOK, metav1.APIVersions{
			TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}},
		})
	})
	mux.HandleFunc("GET /apis", func(w http.ResponseWriter, _ *http.Request) {
		peerJSON(w, http.StatusOK, metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{}})
	})
	mux.HandleFunc("GET /api/v1", func(w http.ResponseWriter, _ *http.Request) {
		peerJSON(w, http.StatusOK, metav1.APIResourceList{
			TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: "v1",
			APIResources: []metav1.APIResource{
				{Name: "pods", SingularName: "pod", Namespaced: true, Kind: "Pod", ShortNames: []string{"po"}, Verbs: metav1.Verbs{"get", "list"}},
				{Name: "pods/attach", Namespaced: true, Kind: "PodAttachOptions", Verbs: metav1.Verbs{"create", "get"}},
				{Name: "pods/exec", Namespaced: true, Kind: "PodExecOptions", Verbs: metav1.Verbs{"create", "get"}},
				{Name: "pods/portforward", Namespaced: true, Kind: "PodPortForwardOptions", Verbs: metav1.Verbs{"create", "get"}},
			},
		})
	})
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{name}", p.getPod)
	mux.HandleFunc("/api/v1/namespaces/{ns}/pods/{name}/exec", remoteCommandFront(kubelet, toKubelet, "exec"))
	mux.HandleFunc("/api/v1/namespaces/{ns}/pods/{name}/attach", remoteCommandFront(kubelet, toKubelet, "attach"))
	mux.HandleFunc("/api/v1/namespaces/{ns}/pods/{name}/portforward", portForwardFront(kubelet, toKubelet))

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.record(r)
		if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+p.token {
			peerStatus(w, apierrors.NewUnauthorized("the stream peer accepts only the gateway's token"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (p *streamPeer) getPod(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if ns != peerNamespace || (name != peerPod && name != peerSlowPod) {
		peerStatus(w, apierrors.NewNotFound(corev1.Resource("pods"), name))
		return
	}
	if name == peerSlowPod {
		select {
		case <-time.After(peerSlowDelay):
		case <-r.Context().Done():
			return
		}
	}
	peerJSON(w, http.StatusOK, &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: "0d7c2a4e-5b1f-4b8e-9d57-3f2a6c1e8b90", ResourceVersion: "1"},
		Spec: corev1.PodSpec{NodeName: "fake-node", Containers: []corev1.Container{{
			Name: peerContainer, Image: "example.invalid/echo:1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: peerEchoPort, Protocol: corev1.ProtocolTCP}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
			Name: peerContainer, Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
		}}},
	})
}

// remoteCommandFront serves exec or attach as kube-apiserver does: WebSocket with the v5
// (stream close) protocol is translated to SPDY towards the node, anything else (SPDY, older
// WebSocket protocols) is handed through to the node as it came.
func remoteCommandFront(kubelet *url.URL, toKubelet http.RoundTripper, verb string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name := r.PathValue("ns"), r.PathValue("name")
		if ns != peerNamespace || name != peerPod {
			peerStatus(w, apierrors.NewNotFound(corev1.Resource("pods"), name))
			return
		}
		q := r.URL.Query()
		container := q.Get("container")
		if container == "" {
			container = peerContainer
		}
		if container != peerContainer {
			peerStatus(w, apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", container, name)))
			return
		}
		opts := apiserverproxy.Options{Stdin: queryBool(q, "stdin"), Stdout: queryBool(q, "stdout"), Stderr: queryBool(q, "stderr"), Tty: queryBool(q, "tty")}
		// The node's query, as kube-apiserver's ExecLocation/AttachLocation build it.
		nodeQuery := url.Values{}
		if verb == "exec" {
			nodeQuery["command"] = q["command"]
			if len(q["command"]) == 0 {
				peerStatus(w, apierrors.NewBadRequest("you must specify at least one command for the container"))
				return
			}
		}
		for param, on := range map[string]bool{"input": opts.Stdin, "output": opts.Stdout, "error": opts.Stderr, "tty": opts.Tty} {
			if on {
				nodeQuery.Set(param, "1")
			}
		}
		location := kubelet.JoinPath(verb, ns, name, container)
		location.RawQuery = nodeQuery.Encode()
		passThrough := apimachineryproxy.NewUpgradeAwareHandler(location, toKubelet, false, true, peerResponder{})
		translator := apiserverproxy.NewStreamTranslatorHandler(location, toKubelet, 0, opts)
		apiserverproxy.NewTranslatingHandler(passThrough, translator, wsstream.IsWebSocketRequestWithStreamCloseProtocol).ServeHTTP(w, r)
	}
}

// portForwardFront serves port-forward as kube-apiserver does: SPDY is handed through to the
// node; SPDY tunneled over WebSocket (SPDY/3.1+portforward.k8s.io) is unwrapped first.
func portForwardFront(kubelet *url.URL, toKubelet http.RoundTripper) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name := r.PathValue("ns"), r.PathValue("name")
		if ns != peerNamespace || name != peerPod {
			peerStatus(w, apierrors.NewNotFound(corev1.Resource("pods"), name))
			return
		}
		passThrough := apimachineryproxy.NewUpgradeAwareHandler(kubelet.JoinPath("portforward", ns, name), toKubelet, false, true, peerResponder{})
		tunnel := apiserverproxy.NewTunnelingHandler(passThrough)
		apiserverproxy.NewTranslatingHandler(passThrough, tunnel, wsstream.IsWebSocketRequestWithTunnelingProtocol).ServeHTTP(w, r)
	}
}

func queryBool(q url.Values, key string) bool {
	on, err := strconv.ParseBool(q.Get(key))
	return err == nil && on
}

// peerResponder answers for the upgrade-aware proxy when the node cannot be reached or refuses.
type peerResponder struct{}

func (peerResponder) Error(w http.ResponseWriter, _ *http.Request, err error) {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		peerStatus(w, err)
		return
	}
	peerStatus(w, apierrors.NewServiceUnavailable(err.Error()))
}

func peerStatus(w http.ResponseWriter, err error) {
	st := apierrors.NewInternalError(err).ErrStatus
	var api apierrors.APIStatus
	if errors.As(err, &api) {
		st = api.Status()
	}
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	peerJSON(w, int(st.Code), st)
}

func peerJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// newFakeKubelet serves the kubelet's streaming endpoints with the kubelet's own server code.
func newFakeKubelet() http.Handler {
	const idle, creation = 5 * time.Minute, kubeletremotecommand.DefaultStreamCreationTimeout
	rt := fakeRuntime{}
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		opts, err := kubeletremotecommand.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		kubeletremotecommand.ServeExec(w, r, rt, r.PathValue("pod"), "", r.PathValue("container"), r.URL.Query()["command"],
			opts, idle, creation, kubeletremotecommand.SupportedStreamingProtocols)
	})
	mux.HandleFunc("/attach/{ns}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		opts, err := kubeletremotecommand.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		kubeletremotecommand.ServeAttach(w, r, rt, r.PathValue("pod"), "", r.PathValue("container"),
			opts, idle, creation, kubeletremotecommand.SupportedStreamingProtocols)
	})
	mux.HandleFunc("/portforward/{ns}/{pod}", func(w http.ResponseWriter, r *http.Request) {
		opts, err := kubeletportforward.NewV4Options(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		kubeletportforward.ServePortForward(w, r, rt, r.PathValue("pod"), "", opts, idle, creation, kubeletportforward.SupportedProtocols)
	})
	return mux
}

// fakeRuntime is the container runtime behind the fake kubelet. Commands:
//
//	echo ARGS...  prints ARGS to stdout
//	upper         copies stdin to stdout upper-cased, chunk by chunk as it arrives, then
//	              reports the byte count on stderr
//	exit N        says so on stderr and exits with code N
//
// Attaching runs "upper" after a line on stderr; port peerEchoPort answers upper-cased.
type fakeRuntime struct{}

func (fakeRuntime) ExecInContainer(_ context.Context, _, _, _ string, cmd []string, in io.Reader, out, errOut io.WriteCloser,
	_ bool, _ <-chan kubeletremotecommand.TerminalSize, _ time.Duration) error {
	stdout, stderr := writerOrDiscard(out), writerOrDiscard(errOut)
	switch {
	case len(cmd) >= 1 && cmd[0] == "echo":
		_, err := fmt.Fprintln(stdout, strings.Join(cmd[1:], " "))
		return err
	case slices.Equal(cmd, []string{"upper"}):
		n, err := upperCopy(stdout, in)
		fmt.Fprintf(stderr, "%s: upper copied %d bytes\n", peerStderrMarker, n)
		return err
	case len(cmd) == 2 && cmd[0] == "exit":
		code, err := strconv.Atoi(cmd[1])
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "%s: exiting with %d\n", peerStderrMarker, code)
		return utilexec.CodeExitError{Err: fmt.Errorf("exit status %d", code), Code: code}
	}
	fmt.Fprintf(stderr, "%s: %q: command not found\n", peerStderrMarker, cmd)
	return utilexec.CodeExitError{Err: errors.New("exit status 127"), Code: 127}
}

func (fakeRuntime) AttachContainer(_ context.Context, _, _, container string, in io.Reader, out, errOut io.WriteCloser,
	_ bool, _ <-chan kubeletremotecommand.TerminalSize) error {
	fmt.Fprintf(writerOrDiscard(errOut), "%s: attached to %s\n", peerStderrMarker, container)
	_, err := upperCopy(writerOrDiscard(out), in)
	return err
}

func (fakeRuntime) PortForward(_ context.Context, pod, _ string, port int32, stream io.ReadWriteCloser) error {
	if port != peerEchoPort {
		return fmt.Errorf("port %d is not open in pod %s", port, pod)
	}
	_, err := upperCopy(stream, stream)
	return err
}

// upperCopy writes each chunk read from in, upper-cased, at once; it ends at in's EOF.
func upperCopy(out io.Writer, in io.Reader) (int64, error) {
	if in == nil {
		return 0, nil
	}
	var n int64
	buf := make([]byte, 32*1024)
	for {
		k, err := in.Read(buf)
		if k > 0 {
			if _, werr := out.Write(bytes.ToUpper(buf[:k])); werr != nil {
				return n, werr
			}
			n += int64(k)
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func writerOrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
