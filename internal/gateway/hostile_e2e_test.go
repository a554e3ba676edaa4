package gateway

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

// hostileNS is where the corpus' user may read and create configmaps, so a request that gets
// through unharmed has a known answer (200 or 201) and a refusal cannot pass for one.
const hostileNS = "hostile"

// hostileOutcome is what the gateway did with one hostile request.
type hostileOutcome struct {
	code      int    // status of the first response; 0 when none came
	requestID string // X-Request-Id of that response
	closed    bool   // the connection was closed after it (HTTP/1.1), or the stream reset (HTTP/2)
	more      int    // further responses on the same connection (a second, smuggled request)
	elapsed   time.Duration
}

// hostileWant is what must hold for a case. The record is looked up by the case's own
// User-Agent: decision "" means no record may exist (the request never reached the chain).
type hostileWant struct {
	code     int  // 0: no response at all
	closed   bool // the connection must be closed (or the HTTP/2 stream reset)
	more     int  // responses after the first (pipelined requests Go parsed as such)
	decision event.Decision
	reason   string
	within   time.Duration               // when set, the outcome must come within this long
	record   func(e *event.Event) string // further checks on the record; "" when fine
}

type hostileCase struct {
	class, name string
	// send performs the request with ua as its User-Agent (and marks smuggled ones ua+"/inner").
	send func(t *testing.T, ua string) hostileOutcome
	want hostileWant
	// secret is a value that must appear neither in the gateway's log nor in the record.
	secret string
}

// TestHostileInputCorpus sends malformed and hostile requests at a real gateway in front of the
// real API server: broken and forged tokens, header and request smuggling over HTTP/1.1 and
// HTTP/2, slow clients, huge selectors, path tricks and body bombs. Each must get its expected
// status (or a closed connection), leave the gateway serving, and leave the right record.
func TestHostileInputCorpus(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, hostileNS)
	c.MustGrantRole(t, hostileNS, "hostile-rw", []rbacv1.PolicyRule{readConfigMaps, writeConfigMaps}, testenv.User("hostile-user"))
	open, store := embeddedStore(t)
	g := startGateway(t, func(cfg *config.Config) {
		cfg.Audit.Batch.FlushInterval = config.Duration(50 * time.Millisecond)
		cfg.Timeouts.ReadHeader = config.Duration(2 * time.Second)
		cfg.Timeouts.Request = config.Duration(8 * time.Second)
	}, WithAuditStore(open))
	token := g.mint(t, "hostile-user")
	f := newForger(t, g)
	list := "/api/v1/namespaces/" + hostileNS + "/configmaps"

	cases := hostileJWTCases(g, f, list)
	cases = append(cases, hostileHeaderCases(g, token, c.AdminToken, list)...)
	cases = append(cases, hostileHTTP2Cases(g, token, list)...)
	cases = append(cases, hostileFramingCases(g, token, list)...)
	cases = append(cases, hostileSlowCases(g, token, list)...)
	cases = append(cases, hostileSelectorCases(g, token, list)...)
	cases = append(cases, hostilePathCases(g, token)...)
	cases = append(cases, hostileBodyCases(g, token, list)...)

	outcomes := make([]hostileOutcome, len(cases))
	for i, hc := range cases {
		outcomes[i] = hc.send(t, hostileUA(i))
		// Whatever came before, the gateway still serves an ordinary request.
		if _, code := requestID(t, g, http.MethodGet, list, token); code != http.StatusOK {
			t.Fatalf("%s/%s: the gateway no longer serves: a normal list got %d", hc.class, hc.name, code)
		}
	}
	// A last request marks the end: the spool ships in order, so every record before it is in.
	lastID, _ := requestID(t, g, http.MethodGet, list, token)
	eventsByRequest(t, store, lastID)
	all, err := allEvents(store())
	if err != nil {
		t.Fatal(err)
	}
	byUA := map[string][]*event.Event{}
	for _, e := range all {
		byUA[e.UserAgent] = append(byUA[e.UserAgent], e)
	}

	counts := map[string]int{}
	for i, hc := range cases {
		counts[hc.class]++
		ua, got, w := hostileUA(i), outcomes[i], hc.want
		fail := func(format string, args ...any) {
			t.Errorf("%s/%s: "+format, append([]any{hc.class, hc.name}, args...)...)
		}
		if got.code != w.code {
			fail("status %d, want %d", got.code, w.code)
		}
		if got.closed != w.closed {
			fail("connection closed %v, want %v", got.closed, w.closed)
		}
		if got.more != w.more {
			fail("%d further responses on the connection, want %d", got.more, w.more)
		}
		if w.within > 0 && got.elapsed > w.within {
			fail("took %s, want at most %s", got.elapsed, w.within)
		}
		evs := byUA[ua]
		switch {
		case w.decision == "" && len(evs) != 0:
			fail("stored %d records (%s/%s), want none", len(evs), evs[0].Decision, evs[0].RefusalReason)
		case w.decision != "" && len(evs) != 1:
			fail("stored %d records, want 1", len(evs))
		case w.decision != "":
			e := evs[0]
			if e.Decision != w.decision || e.RefusalReason != w.reason || e.ResponseCode != got.code || e.RequestID != got.requestID {
				fail("stored %s/%q code %d id %s, want %s/%q code %d id %s", e.Decision, e.RefusalReason, e.ResponseCode, e.RequestID,
					w.decision, w.reason, got.code, got.requestID)
			}
			if w.record != nil {
				if msg := w.record(e); msg != "" {
					fail("record: %s", msg)
				}
			}
			if hc.secret != "" && strings.Contains(fmt.Sprintf("%+v", *e), hc.secret) {
				fail("the record holds the secret value")
			}
		}
		// The inner request of a smuggling attempt is recorded (and refused) on its own, or not at all.
		for _, e := range byUA[ua+"/inner"] {
			if e.Decision == event.DecisionAllow {
				fail("a smuggled inner request was forwarded and allowed: %s %s", e.Method, e.RequestURI)
			}
		}
		if hc.secret != "" && strings.Contains(g.logs.String(), hc.secret) {
			fail("the gateway log holds the secret value")
		}
	}
	classes := make([]string, 0, len(counts))
	for class := range counts {
		classes = append(classes, class)
	}
	sort.Strings(classes)
	var summary []string
	for _, class := range classes {
		summary = append(summary, fmt.Sprintf("%s=%d", class, counts[class]))
	}
	t.Logf("hostile corpus: %d cases: %s", len(cases), strings.Join(summary, " "))
}

func hostileUA(i int) string { return "hostile-corpus/" + strconv.Itoa(i) }

// --- JWTs -------------------------------------------------------------------------------

// forger signs tokens by hand with the gateway's own session key, to say exactly what a
// token claims; anything the verifier must refuse is then refused for that reason alone.
type forger struct {
	kid    string
	priv   ed25519.PrivateKey
	issuer string
}

func newForger(t *testing.T, g *testGateway) *forger {
	t.Helper()
	var kid string
	for _, k := range g.Sessions().Keys() {
		if k.Signing {
			kid = k.KID
		}
	}
	data, err := os.ReadFile(filepath.Join(g.cfg.Session.KeysDir, kid+".pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("no PEM block in the session key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &forger{kid: kid, priv: k.(ed25519.PrivateKey), issuer: g.cfg.Session.Issuer}
}

func b64(v any) string {
	var raw []byte
	switch v := v.(type) {
	case string:
		raw = []byte(v)
	case []byte:
		raw = v
	default:
		raw, _ = json.Marshal(v)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// header is the session header, with changes; a nil value removes the field.
func (f *forger) header(changes map[string]any) map[string]any {
	h := map[string]any{"alg": "EdDSA", "typ": "kaccess-session+jwt", "kid": f.kid}
	for k, v := range changes {
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	return h
}

// claims are a valid session's claims for hostile-user, with changes.
func (f *forger) claims(changes map[string]any) map[string]any {
	now := time.Now().Unix()
	c := map[string]any{"iss": f.issuer, "sub": "hostile-user", "jti": "0123456789abcdef0123456789abcdef",
		"iat": now, "nbf": now, "exp": now + 600, "src": "forged"}
	for k, v := range changes {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// sign signs header and claims with the gateway's key (EdDSA, whatever alg the header names).
func (f *forger) sign(header, claims map[string]any) string {
	input := b64(header) + "." + b64(claims)
	return input + "." + b64(ed25519.Sign(f.priv, []byte(input)))
}

func hostileJWTCases(g *testGateway, f *forger, list string) []hostileCase {
	valid := f.sign(f.header(nil), f.claims(nil))
	pub := f.priv.Public().(ed25519.PublicKey)
	hs256 := func(key []byte) string {
		input := b64(f.header(map[string]any{"alg": "HS256"})) + "." + b64(f.claims(map[string]any{"sub": "kaccess-admin"}))
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(input))
		return input + "." + b64(mac.Sum(nil))
	}
	_, attackerKey, _ := ed25519.GenerateKey(rand.Reader)
	embeddedJWK := func() string {
		h := f.header(map[string]any{"jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64([]byte(attackerKey.Public().(ed25519.PublicKey)))}})
		input := b64(h) + "." + b64(f.claims(map[string]any{"sub": "kaccess-admin"}))
		return input + "." + b64(ed25519.Sign(attackerKey, []byte(input)))
	}
	parts := strings.Split(valid, ".")
	huge := strings.Repeat("A", 100<<10)
	past, future := time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(time.Hour).Unix()
	refused := hostileWant{code: 401, decision: event.DecisionRefused, reason: "unauthenticated"}
	tokens := []struct {
		name, auth string
		want       hostileWant
	}{
		{"empty bearer", "Bearer ", refused},
		{"no scheme", valid, refused},
		{"basic scheme", "Basic " + b64("admin:admin"), refused},
		{"one segment", "Bearer " + parts[0], refused},
		{"two segments", "Bearer " + parts[0] + "." + parts[1], refused},
		{"four segments", "Bearer " + valid + ".AAAA", refused},
		{"not base64", "Bearer !!!.@@@.###", refused},
		{"header not JSON", "Bearer " + b64("{not json") + "." + parts[1] + "." + parts[2], refused},
		{"huge 100KB token", "Bearer " + huge + "." + huge + "." + huge[:1000], refused},
		{"alg none", "Bearer " + b64(f.header(map[string]any{"alg": "none"})) + "." + b64(f.claims(map[string]any{"sub": "kaccess-admin"})) + ".", refused},
		{"alg None signed", "Bearer " + f.sign(f.header(map[string]any{"alg": "None"}), f.claims(nil)), refused},
		{"HS256 with the public key", "Bearer " + hs256(pub), refused},
		{"HS256 with the public key PEM", "Bearer " + hs256(pemPublic(pub)), refused},
		{"embedded jwk of the attacker", "Bearer " + embeddedJWK(), refused},
		{"kid path traversal", "Bearer " + f.sign(f.header(map[string]any{"kid": "../../etc/passwd"}), f.claims(nil)), refused},
		{"kid absolute path", "Bearer " + f.sign(f.header(map[string]any{"kid": "/dev/null"}), f.claims(nil)), refused},
		{"kid unknown", "Bearer " + f.sign(f.header(map[string]any{"kid": "20200101T000000Z-deadbeef"}), f.claims(nil)), refused},
		{"kid missing", "Bearer " + f.sign(f.header(map[string]any{"kid": nil}), f.claims(nil)), refused},
		{"typ missing", "Bearer " + f.sign(f.header(map[string]any{"typ": nil}), f.claims(nil)), refused},
		{"exp in the past", "Bearer " + f.sign(f.header(nil), f.claims(map[string]any{"iat": past, "nbf": past, "exp": past + 60})), refused},
		{"nbf in the future", "Bearer " + f.sign(f.header(nil), f.claims(map[string]any{"nbf": future})), refused},
		{"exp missing", "Bearer " + f.sign(f.header(nil), f.claims(map[string]any{"exp": nil})), refused},
		{"exp not a number", "Bearer " + f.sign(f.header(nil), f.claims(map[string]any{"exp": "never"})), refused},
		{"wrong issuer", "Bearer " + f.sign(f.header(nil), f.claims(map[string]any{"iss": "https://evil.example"})), refused},
		{"payload swapped under a valid signature", "Bearer " + parts[0] + "." + b64(f.claims(map[string]any{"sub": "kaccess-admin"})) + "." + parts[2], refused},
		{"signature cut", "Bearer " + parts[0] + "." + parts[1] + ".", refused},
		// Signed by the gateway's own key, so it authenticates: the identity still may not carry
		// the API server's break-glass group.
		{"signed claim of system:masters", "Bearer " + f.sign(f.header(nil), f.claims(map[string]any{"groups": []string{"system:masters"}})),
			hostileWant{code: 403, decision: event.DecisionRefused, reason: "privileged_group"}},
		{"signed control: a valid forged token", "Bearer " + valid, hostileWant{code: 200, decision: event.DecisionAllow}},
	}
	var out []hostileCase
	for _, tk := range tokens {
		auth := tk.auth
		secret := strings.TrimPrefix(auth, "Bearer ")
		if len(secret) < 16 || tk.want.code == 200 {
			secret = ""
		}
		out = append(out, hostileCase{class: "jwt", name: tk.name, secret: secret, want: tk.want,
			send: func(t *testing.T, ua string) hostileOutcome {
				return h1(t, g, rawRequest("GET", list, ua, "Authorization: "+auth))
			}})
	}
	return out
}

func pemPublic(pub ed25519.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// --- HTTP/1.1 over TLS, byte by byte --------------------------------------------------------

// rawRequest is an HTTP/1.1 request as bytes: the request line, Host, User-Agent, the given
// header lines as they are, and body (nothing added: framing headers are the caller's).
func rawRequest(method, target, ua string, lines ...string) []byte {
	return rawRequestBody(method, target, ua, "", lines...)
}

func rawRequestBody(method, target, ua, body string, lines ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: kaccess\r\nUser-Agent: %s\r\n", method, target, ua)
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n" + body)
	return b.Bytes()
}

func dialTLS(t *testing.T, g *testGateway, proto string) *tls.Conn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(g.CAPEM)
	conn, err := tls.Dial("tcp", g.Addr(), &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{proto}})
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.ConnectionState().NegotiatedProtocol; got != proto && !(proto == "http/1.1" && got == "") {
		t.Fatalf("negotiated %q, want %q", got, proto)
	}
	return conn
}

// h1 writes raw to a fresh HTTP/1.1 connection and reads what comes back: the first response,
// whether the connection is closed after it, and any further responses (of requests Go read
// out of what the client meant as one).
func h1(t *testing.T, g *testGateway, raw []byte) hostileOutcome {
	t.Helper()
	return h1Paced(t, g, func(w io.Writer) { _, _ = w.Write(raw) })
}

func h1Paced(t *testing.T, g *testGateway, write func(io.Writer)) hostileOutcome {
	t.Helper()
	conn := dialTLS(t, g, "http/1.1")
	defer conn.Close()
	start := time.Now()
	_ = conn.SetDeadline(start.Add(30 * time.Second))
	go write(conn)
	br := bufio.NewReader(conn)
	var out hostileOutcome
	resp, err := http.ReadResponse(br, nil)
	out.elapsed = time.Since(start)
	if err != nil {
		out.closed = true
		return out
	}
	out.code, out.requestID = resp.StatusCode, resp.Header.Get("X-Request-Id")
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	for {
		_ = conn.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			out.closed = !(errors.As(err, &ne) && ne.Timeout())
			return out
		}
		out.more++
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func hostileHeaderCases(g *testGateway, token, adminToken, list string) []hostileCase {
	auth := "Authorization: Bearer " + token
	identity := hostileWant{code: 400, decision: event.DecisionRefused, reason: "identity_header"}
	goRejects := hostileWant{code: 400, closed: true}
	notImpersonated := func(e *event.Event) string {
		if e.ImpersonatedUser != "" || len(e.ImpersonatedGroups) != 0 || e.User != "hostile-user" {
			return fmt.Sprintf("user %q as %q %v, want hostile-user as nobody else", e.User, e.ImpersonatedUser, e.ImpersonatedGroups)
		}
		return ""
	}
	allowedPlain := hostileWant{code: 200, decision: event.DecisionAllow, record: notImpersonated}
	headers := []struct {
		name  string
		lines []string
		want  hostileWant
	}{
		{"obs-fold hides Impersonate-User in a value", []string{auth, "X-Note: a", " Impersonate-User: kaccess-admin"}, allowedPlain},
		// net/http unfolds obs-fold into one value with a space (RFC 9112 section 5.2 allows it), and
		// the gateway forwards over HTTP/2: nothing downstream can read the lines differently.
		{"obs-fold continues Authorization", []string{"Authorization: Bearer", " " + token}, allowedPlain},
		{"obs-fold continues Impersonate-User", []string{auth, "Impersonate-User: hostile-user", " system:masters"},
			hostileWant{code: 403, decision: event.DecisionRefused, reason: "impersonation_refused", record: func(e *event.Event) string {
				if e.ImpersonatedUser != "hostile-user system:masters" {
					return fmt.Sprintf("impersonated %q, want the unfolded value", e.ImpersonatedUser)
				}
				return ""
			}}},
		{"space before colon", []string{auth, "Impersonate-User : kaccess-admin"}, goRejects},
		{"tab before colon", []string{auth, "X-Remote-User\t: kaccess-admin"}, goRejects},
		{"duplicate Authorization, other case", []string{auth, "authorization: Bearer " + adminToken}, identity},
		{"duplicate Authorization, one is Basic", []string{auth, "AUTHORIZATION: Basic " + b64("admin:admin")}, identity},
		{"Impersonate-User with CR LF percent-encoded", []string{auth, "Impersonate-User: kaccess-admin%0d%0aImpersonate-Group: system:masters"},
			hostileWant{code: 403, decision: event.DecisionRefused, reason: "impersonation_refused"}},
		{"Impersonate-User with a bare CR", []string{auth, "Impersonate-User: kaccess-admin\rImpersonate-Group: system:masters"}, goRejects},
		// A bare LF ends a header line for net/http: two headers, and the impersonation is checked.
		{"Impersonate-User with a bare LF", []string{auth, "Impersonate-User: hostile-user\nImpersonate-Group: system:masters"},
			hostileWant{code: 403, decision: event.DecisionRefused, reason: "impersonation_refused"}},
		{"Impersonate-User with NUL", []string{auth, "Impersonate-User: kaccess-admin\x00"}, goRejects},
		{"empty Impersonate-User", []string{auth, "Impersonate-User:"}, identity},
		{"lowercase impersonate-group", []string{auth, "impersonate-group: system:masters"}, identity},
		{"X-Remote-User", []string{auth, "X-Remote-User: kaccess-admin"}, identity},
		{"x-remote-group lowercase", []string{auth, "x-remote-group: system:masters"}, identity},
		{"X-Remote-Extra", []string{auth, "X-Remote-Extra-Scopes: admin"}, identity},
		{"Connection names Impersonate-User", []string{auth, "Connection: keep-alive, Impersonate-User"}, identity},
		{"Connection names X-Remote-Group", []string{auth, "Connection: X-Remote-Group", "X-Remote-Group: system:masters"}, identity},
		{"Connection names Authorization", []string{auth, "Connection: authorization"}, identity},
		{"underscore Impersonate_User", []string{auth, "Impersonate_User: kaccess-admin"}, allowedPlain},
		{"Audit-Id from the client", []string{auth, "Audit-Id: forged-audit-id"}, hostileWant{code: 200, decision: event.DecisionAllow,
			record: func(e *event.Event) string {
				if e.RequestID == "forged-audit-id" {
					return "the client's Audit-Id became the request id"
				}
				return ""
			}}},
		{"X-Forwarded-For from an untrusted client", []string{auth, "X-Forwarded-For: 10.9.9.9"}, hostileWant{code: 200, decision: event.DecisionAllow,
			record: func(e *event.Event) string {
				if e.SourceIP == "10.9.9.9" {
					return "an untrusted X-Forwarded-For became the source IP"
				}
				return ""
			}}},
		{"two Host headers", []string{auth, "Host: evil.example"}, goRejects},
		{"header name with a slash", []string{auth, "Impersonate/User: kaccess-admin"}, goRejects},
		{"header line without colon", []string{auth, "Impersonate-User kaccess-admin"}, goRejects},
	}
	var out []hostileCase
	for _, h := range headers {
		lines := h.lines
		out = append(out, hostileCase{class: "header-smuggling", name: h.name, want: h.want,
			send: func(t *testing.T, ua string) hostileOutcome { return h1(t, g, rawRequest("GET", list, ua, lines...)) }})
	}
	out = append(out, hostileCase{class: "header-smuggling", name: "obs-fold as the first header line", want: goRejects,
		send: func(t *testing.T, ua string) hostileOutcome {
			return h1(t, g, []byte("GET "+list+" HTTP/1.1\r\n Impersonate-User: kaccess-admin\r\nHost: kaccess\r\nUser-Agent: "+ua+"\r\n"+auth+"\r\n\r\n"))
		}})
	return out
}

// --- HTTP/2 frames, so pseudo-headers and names net/http would never send go out ------------

// h2Do opens an HTTP/2 connection, sends one HEADERS frame with fields exactly as given
// (hpack does not care what they say), and reads until the stream ends or is reset.
func h2Do(t *testing.T, g *testGateway, fields [][2]string) hostileOutcome {
	t.Helper()
	conn := dialTLS(t, g, "h2")
	defer conn.Close()
	start := time.Now()
	_ = conn.SetDeadline(start.Add(20 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 20
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range fields {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	var out hostileOutcome
	for {
		frame, err := fr.ReadFrame()
		if err != nil {
			out.closed = true
			out.elapsed = time.Since(start)
			return out
		}
		switch fm := frame.(type) {
		case *http2.SettingsFrame:
			if !fm.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if out.code == 0 {
				out.code, _ = strconv.Atoi(fm.PseudoValue("status"))
				for _, hf := range fm.RegularFields() {
					if hf.Name == "x-request-id" {
						out.requestID = hf.Value
					}
				}
			}
			if fm.StreamEnded() {
				out.elapsed = time.Since(start)
				return out
			}
		case *http2.DataFrame:
			if fm.StreamEnded() {
				out.elapsed = time.Since(start)
				return out
			}
		case *http2.RSTStreamFrame:
			out.closed = true
			out.elapsed = time.Since(start)
			return out
		case *http2.GoAwayFrame:
			out.closed = true
			out.elapsed = time.Since(start)
			return out
		}
	}
}

func hostileHTTP2Cases(g *testGateway, token, list string) []hostileCase {
	base := func(ua string, path string) [][2]string {
		return [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "kaccess"}, {":path", path},
			{"authorization", "Bearer " + token}, {"user-agent", ua}}
	}
	reset := hostileWant{closed: true}
	// net/http's HTTP/2 server answers connection-specific fields itself (RFC 9113 section 8.2.2).
	goAnswers := hostileWant{code: 400}
	identity := hostileWant{code: 400, decision: event.DecisionRefused, reason: "identity_header"}
	variants := []struct {
		name  string
		build func(ua string) [][2]string
		want  hostileWant
	}{
		{"control", func(ua string) [][2]string { return base(ua, list) }, hostileWant{code: 200, decision: event.DecisionAllow}},
		{"second :authority", func(ua string) [][2]string { return append(base(ua, list), [2]string{":authority", "evil.example"}) }, reset},
		{"second :path", func(ua string) [][2]string {
			return append(base(ua, list), [2]string{":path", "/api/v1/namespaces/kube-system/secrets"})
		}, reset},
		{"second :method", func(ua string) [][2]string { return append(base(ua, list), [2]string{":method", "DELETE"}) }, reset},
		{"pseudo-header after a regular one", func(ua string) [][2]string {
			f := base(ua, list)
			return append(f[1:], f[0])
		}, reset},
		{"unknown pseudo-header", func(ua string) [][2]string {
			return append(base(ua, list), [2]string{":impersonate-user", "kaccess-admin"})
		}, reset},
		{":path missing", func(ua string) [][2]string { return append(base(ua, list)[:3], base(ua, list)[4:]...) }, reset},
		{"uppercase header name", func(ua string) [][2]string {
			return append(base(ua, list), [2]string{"Impersonate-User", "kaccess-admin"})
		}, reset},
		{"uppercase Authorization", func(ua string) [][2]string { return append(base(ua, list), [2]string{"Authorization", "Bearer x"}) }, reset},
		{"connection header", func(ua string) [][2]string {
			return append(base(ua, list), [2]string{"connection", "impersonate-user"})
		}, goAnswers},
		{"transfer-encoding header", func(ua string) [][2]string { return append(base(ua, list), [2]string{"transfer-encoding", "chunked"}) }, goAnswers},
		{"keep-alive header", func(ua string) [][2]string { return append(base(ua, list), [2]string{"keep-alive", "timeout=5"}) }, goAnswers},
		{"te other than trailers", func(ua string) [][2]string { return append(base(ua, list), [2]string{"te", "gzip"}) }, goAnswers},
		{"CR LF in a value", func(ua string) [][2]string {
			return append(base(ua, list), [2]string{"x-note", "a\r\nimpersonate-user: kaccess-admin"})
		}, reset},
		{"NUL in a name", func(ua string) [][2]string {
			return append(base(ua, list), [2]string{"impersonate-user\x00", "kaccess-admin"})
		}, reset},
		{"space in a name", func(ua string) [][2]string {
			return append(base(ua, list), [2]string{"impersonate-user ", "kaccess-admin"})
		}, reset},
		{"lowercase impersonate-group", func(ua string) [][2]string {
			return append(base(ua, list), [2]string{"impersonate-group", "system:masters"})
		}, identity},
		{"x-remote-user", func(ua string) [][2]string {
			return append(base(ua, list), [2]string{"x-remote-user", "kaccess-admin"})
		}, identity},
		{"second authorization field", func(ua string) [][2]string { return append(base(ua, list), [2]string{"authorization", "Bearer x"}) }, identity},
		{"host differing from :authority", func(ua string) [][2]string { return append(base(ua, list), [2]string{"host", "evil.example"}) },
			hostileWant{code: 200, decision: event.DecisionAllow}},
	}
	var out []hostileCase
	for _, v := range variants {
		build := v.build
		out = append(out, hostileCase{class: "http2", name: v.name, want: v.want,
			send: func(t *testing.T, ua string) hostileOutcome { return h2Do(t, g, build(ua)) }})
	}
	return out
}

// --- request smuggling on the HTTP/1.1 listener ---------------------------------------------

func hostileFramingCases(g *testGateway, token, list string) []hostileCase {
	auth := "Authorization: Bearer " + token
	// inner is the request a smuggler hides in the body: without a credential, so if anything
	// runs it the record says refused, never allow.
	inner := func(ua string) string {
		return "GET /api/v1/namespaces/kube-system/secrets HTTP/1.1\r\nHost: kaccess\r\nUser-Agent: " + ua + "/inner\r\n\r\n"
	}
	goRejects := hostileWant{code: 400, closed: true}
	notImplemented := hostileWant{code: 501, closed: true}
	// net/http reads these as chunked; the gateway then closes the connection, so the inner
	// request is never read. The outer one's empty body gets the API server's 400.
	chunkedThenClosed := hostileWant{code: 400, closed: true, decision: event.DecisionAllow}
	variants := []struct {
		name  string
		build func(ua string) []byte
		want  hostileWant
	}{
		{"CL and TE chunked", func(ua string) []byte {
			body := "0\r\n\r\n" + inner(ua)
			return rawRequestBody("POST", list, ua, body, auth, "Content-Type: application/json", "Content-Length: 5", "Transfer-Encoding: chunked")
		}, chunkedThenClosed},
		{"TE chunked and CL covering the inner request", func(ua string) []byte {
			body := "0\r\n\r\n" + inner(ua)
			return rawRequestBody("POST", list, ua, body, auth, "Transfer-Encoding: chunked", "Content-Length: "+strconv.Itoa(len(body)))
		}, chunkedThenClosed},
		{"two Content-Length", func(ua string) []byte {
			return rawRequestBody("POST", list, ua, "{}"+inner(ua), auth, "Content-Length: 2", "Content-Length: "+strconv.Itoa(2+len(inner(ua))))
		}, goRejects},
		{"Content-Length list", func(ua string) []byte {
			return rawRequestBody("POST", list, ua, "{}", auth, "Content-Length: 2, 2")
		}, goRejects},
		{"negative Content-Length", func(ua string) []byte { return rawRequestBody("POST", list, ua, "{}", auth, "Content-Length: -2") }, goRejects},
		{"Content-Length with a plus", func(ua string) []byte { return rawRequestBody("POST", list, ua, "{}", auth, "Content-Length: +2") }, goRejects},
		{"Content-Length overflow", func(ua string) []byte {
			return rawRequestBody("POST", list, ua, "{}", auth, "Content-Length: 99999999999999999999999")
		}, goRejects},
		{"TE chunked, identity", func(ua string) []byte {
			return rawRequestBody("POST", list, ua, "0\r\n\r\n"+inner(ua), auth, "Transfer-Encoding: chunked, identity")
		}, notImplemented},
		{"TE identity, chunked", func(ua string) []byte {
			return rawRequestBody("POST", list, ua, "0\r\n\r\n"+inner(ua), auth, "Transfer-Encoding: identity, chunked")
		}, notImplemented},
		{"TE xchunked", func(ua string) []byte {
			return rawRequestBody("POST", list, ua, "0\r\n\r\n"+inner(ua), auth, "Transfer-Encoding: xchunked")
		}, notImplemented},
		{"TE twice", func(ua string) []byte {
			return rawRequestBody("POST", list, ua, "0\r\n\r\n"+inner(ua), auth, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked")
		}, notImplemented},
		{"TE with a vertical tab", func(ua string) []byte {
			return rawRequestBody("POST", list, ua, "0\r\n\r\n"+inner(ua), auth, "Transfer-Encoding:\x0bchunked")
		}, goRejects},
		{"TE obs-folded", func(ua string) []byte {
			return rawRequestBody("POST", list, ua, "0\r\n\r\n"+inner(ua), auth, "Transfer-Encoding:", " chunked")
		}, chunkedThenClosed},
		{"chunk size overflow", func(ua string) []byte {
			return rawRequestBody("POST", list, ua, "ffffffffffffffffffff\r\n{}\r\n0\r\n\r\n", auth, "Content-Type: application/json", "Transfer-Encoding: chunked")
		}, hostileWant{code: 400, closed: true, decision: event.DecisionRefused, reason: "bad_request"}},
		{"chunk size not hex", func(ua string) []byte {
			return rawRequestBody("POST", list, ua, "zz\r\n{}\r\n0\r\n\r\n", auth, "Content-Type: application/json", "Transfer-Encoding: chunked")
		}, hostileWant{code: 400, closed: true, decision: event.DecisionRefused, reason: "bad_request"}},
		{"pipelined request without a credential", func(ua string) []byte {
			return append(rawRequest("GET", list, ua, auth), inner(ua)...)
		}, hostileWant{code: 200, more: 1, decision: event.DecisionAllow}},
		{"HTTP/1.0 with TE chunked", func(ua string) []byte {
			raw := rawRequestBody("POST", list, ua, "0\r\n\r\n", auth, "Transfer-Encoding: chunked", "Content-Length: 0")
			return bytes.Replace(raw, []byte("HTTP/1.1"), []byte("HTTP/1.0"), 1)
		}, hostileWant{code: 400, closed: true, decision: event.DecisionAllow}},
		{"no Host", func(ua string) []byte {
			return []byte("GET " + list + " HTTP/1.1\r\nUser-Agent: " + ua + "\r\n" + auth + "\r\n\r\n")
		}, goRejects},
		{"absolute-form target naming another host", func(ua string) []byte {
			return rawRequest("GET", "https://evil.example"+list, ua, auth)
		}, hostileWant{code: 200, decision: event.DecisionAllow}},
		{"request line with two spaces", func(ua string) []byte {
			return []byte("GET  " + list + " HTTP/1.1\r\nHost: kaccess\r\nUser-Agent: " + ua + "\r\n" + auth + "\r\n\r\n")
		}, goRejects},
		{"HTTP/2 preface on the HTTP/1.1 connection", func(ua string) []byte { return []byte(http2.ClientPreface) }, goRejects},
	}
	var out []hostileCase
	for _, v := range variants {
		build := v.build
		out = append(out, hostileCase{class: "request-smuggling", name: v.name, want: v.want,
			send: func(t *testing.T, ua string) hostileOutcome { return h1(t, g, build(ua)) }})
	}
	return out
}

// --- slow clients ---------------------------------------------------------------------------

func hostileSlowCases(g *testGateway, token, list string) []hostileCase {
	auth := "Authorization: Bearer " + token
	return []hostileCase{
		{class: "slow", name: "slowloris headers at 1 byte/s", want: hostileWant{code: 400, closed: true, within: 8 * time.Second},
			send: func(t *testing.T, ua string) hostileOutcome {
				raw := rawRequest("GET", list, ua, auth)
				return h1Paced(t, g, func(w io.Writer) {
					for _, b := range raw {
						if _, err := w.Write([]byte{b}); err != nil {
							return
						}
						time.Sleep(time.Second)
					}
				})
			}},
		{class: "slow", name: "slowloris never ends the headers", want: hostileWant{closed: true, within: 8 * time.Second},
			send: func(t *testing.T, ua string) hostileOutcome {
				head := rawRequest("GET", list, ua, auth)
				return h1Paced(t, g, func(w io.Writer) {
					_, _ = w.Write(head[:len(head)-2])
					for i := 0; i < 20; i++ {
						if _, err := io.WriteString(w, "X-A: b\r\n"); err != nil {
							return
						}
						time.Sleep(500 * time.Millisecond)
					}
				})
			}},
		{class: "slow", name: "body stalls after 10 of 1000 bytes",
			want: hostileWant{code: 504, closed: true, decision: event.DecisionError, reason: "upstream_timeout", within: 12 * time.Second},
			send: func(t *testing.T, ua string) hostileOutcome {
				head := rawRequest("POST", list, ua, auth, "Content-Type: application/json", "Content-Length: 1000")
				return h1Paced(t, g, func(w io.Writer) {
					_, _ = w.Write(append(head, `{"apiVersi`...))
				})
			}},
		{class: "slow", name: "chunked body stalls",
			want: hostileWant{code: 504, closed: true, decision: event.DecisionError, reason: "upstream_timeout", within: 12 * time.Second},
			send: func(t *testing.T, ua string) hostileOutcome {
				head := rawRequest("POST", list, ua, auth, "Content-Type: application/json", "Transfer-Encoding: chunked")
				return h1Paced(t, g, func(w io.Writer) {
					_, _ = w.Write(append(head, "5\r\n{\"api\r\n"...))
				})
			}},
	}
}

// --- huge selectors -------------------------------------------------------------------------

func hostileSelectorCases(g *testGateway, token, list string) []hostileCase {
	auth := "Authorization: Bearer " + token
	many := func(n int) string {
		vals := make([]string, n)
		for i := range vals {
			vals[i] = "v" + strconv.Itoa(i)
		}
		return "app%20in%20(" + strings.Join(vals, ",") + ")"
	}
	headersTooLarge := hostileWant{code: 431, decision: event.DecisionRefused, reason: "too_large"}
	variants := []struct {
		name, query string
		want        hostileWant
	}{
		// Under net/http's limit (maxHeaderBytes and 4 KB of slack), over the gateway's own.
		{"1 MB labelSelector", "labelSelector=" + strings.Repeat("a", 1<<20-200) + "%3Db", headersTooLarge},
		{"1 MB fieldSelector", "fieldSelector=metadata.name%3D" + strings.Repeat("a", 1<<20-200), headersTooLarge},
		{"over net/http's limit", "labelSelector=" + strings.Repeat("a", 1<<20+8<<10), hostileWant{code: 431, closed: true}},
		{"200 KB labelSelector value", "labelSelector=a%3D" + strings.Repeat("b", 200<<10), hostileWant{code: 400, decision: event.DecisionAllow}},
		{"labelSelector with 20000 values", "labelSelector=" + many(20000), hostileWant{code: 200, decision: event.DecisionAllow}},
		{"200 KB fieldSelector", "fieldSelector=metadata.name%3D" + strings.Repeat("a", 200<<10), hostileWant{code: 200, decision: event.DecisionAllow}},
		{"fieldSelector on an unknown field", "fieldSelector=spec.secret%3Dx", hostileWant{code: 400, decision: event.DecisionAllow}},
		{"10000 query parameters", strings.Repeat("labelSelector=a%3Db&", 10000), hostileWant{code: 200, decision: event.DecisionAllow}},
	}
	var out []hostileCase
	for _, v := range variants {
		q, want := v.query, v.want
		out = append(out, hostileCase{class: "selector", name: v.name, want: want,
			send: func(t *testing.T, ua string) hostileOutcome { return h1(t, g, rawRequest("GET", list+"?"+q, ua, auth)) }})
	}
	return out
}

// --- path traversal and encoded slashes -----------------------------------------------------

func hostilePathCases(g *testGateway, token string) []hostileCase {
	auth := "Authorization: Bearer " + token
	ns := "/api/v1/namespaces/" + hostileNS
	// asked checks the record names exactly what the API server parses from the forwarded path.
	asked := func(resource, name, sub string) func(e *event.Event) string {
		return func(e *event.Event) string {
			if e.Resource != resource || e.Name != name || e.Subresource != sub || e.Namespace != hostileNS {
				return fmt.Sprintf("recorded %s/%s/%s name %q, want %s/%s/%s name %q", e.Namespace, e.Resource, e.Subresource, e.Name,
					hostileNS, resource, sub, name)
			}
			return ""
		}
	}
	// net/http's ServeMux redirects unclean paths before any handler: nothing is forwarded.
	redirect := hostileWant{code: 307}
	variants := []struct {
		name, target string
		want         hostileWant
	}{
		{"dot-dot to secrets", ns + "/configmaps/../../kube-system/secrets", redirect},
		{"dot segment", ns + "/./configmaps", redirect},
		{"double slash", "/api/v1//namespaces/" + hostileNS + "/configmaps", redirect},
		{"cluster prefix dot-dot", "/clusters/test/../../api/v1/namespaces/kube-system/secrets", redirect},
		// Encoded dots and slashes pass the mux; the API server parses the decoded path as the gateway
		// does, and refuses the odd subresource: the record names the same one.
		{"percent-encoded dot-dot", ns + "/configmaps/%2e%2e/%2e%2e/kube-system/secrets", hostileWant{code: 403, decision: event.DecisionDeny, record: asked("configmaps", "..", "..")}},
		{"encoded slash in a name", ns + "/configmaps/a%2Fb", hostileWant{code: 403, decision: event.DecisionDeny, record: asked("configmaps", "a", "b")}},
		{"encoded slash before secrets", ns + "/configmaps/x%2F..%2F..%2Fsecrets", hostileWant{code: 403, decision: event.DecisionDeny, record: asked("configmaps", "x", "..")}},
		{"encoded NUL in a name", ns + "/configmaps/a%00b", hostileWant{code: 404, decision: event.DecisionAllow, record: asked("configmaps", "a\x00b", "")}},
		{"backslash in a name", ns + "/configmaps/..%5C..%5Csecrets", hostileWant{code: 404, decision: event.DecisionAllow, record: asked("configmaps", `..\..\secrets`, "")}},
		{"bad percent-encoding", ns + "/configmaps/%zz", goRejects400()},
		{"unknown cluster", "/clusters/nope/api/v1/namespaces", hostileWant{code: 404}},
	}
	var out []hostileCase
	for _, v := range variants {
		target := v.target
		out = append(out, hostileCase{class: "path", name: v.name, want: v.want,
			send: func(t *testing.T, ua string) hostileOutcome { return h1(t, g, rawRequest("GET", target, ua, auth)) }})
	}
	return out
}

func goRejects400() hostileWant { return hostileWant{code: 400, closed: true} }

// --- body bombs -----------------------------------------------------------------------------

func hostileBodyCases(g *testGateway, token, list string) []hostileCase {
	auth := "Authorization: Bearer " + token
	bigJSON := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"k":"` + strings.Repeat("x", 4<<20) + `"}}`
	nested := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	nestedInObject := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"nested"},"data":{"k":` + nested + `}}`
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	_, _ = zw.Write([]byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"bomb"},"data":{"k":"`))
	zeros := make([]byte, 1<<20)
	for i := 0; i < 256; i++ {
		_, _ = zw.Write(zeros)
	}
	_ = zw.Close()
	// The Kubernetes protobuf envelope, then a Unknown whose raw field claims 2^62 bytes.
	proto := append([]byte("k8s\x00\x0a"), 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40)
	proto = append(proto, "xx"...)
	tooLarge := hostileWant{code: 413, closed: true, decision: event.DecisionRefused, reason: "too_large"}
	apiAnswers := func(code int) hostileWant { return hostileWant{code: code, decision: event.DecisionAllow} }
	variants := []struct {
		name string
		body string
		hdrs []string
		want hostileWant
	}{
		{"4 MB JSON with Content-Length", bigJSON, []string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(len(bigJSON))}, tooLarge},
		{"Content-Length of 1 TB, no body", "", []string{"Content-Type: application/json", "Content-Length: 1099511627776"}, tooLarge},
		{"4 MB JSON chunked", chunked(bigJSON), []string{"Content-Type: application/json", "Transfer-Encoding: chunked"}, tooLarge},
		{"100k levels of [", nested, []string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(len(nested))}, apiAnswers(400)},
		{"100k levels of [ inside a ConfigMap", nestedInObject, []string{"Content-Type: application/json", "Content-Length: " + strconv.Itoa(len(nestedInObject))}, apiAnswers(400)},
		{"protobuf with a huge length prefix", string(proto), []string{"Content-Type: application/vnd.kubernetes.protobuf", "Content-Length: " + strconv.Itoa(len(proto))}, apiAnswers(400)},
		{"gzip bomb", bomb.String(), []string{"Content-Type: application/json", "Content-Encoding: gzip", "Content-Length: " + strconv.Itoa(bomb.Len())}, apiAnswers(400)},
		{"JSON with 20k keys", manyKeys(20000), []string{"Content-Type: application/json"}, apiAnswers(400)},
		{"YAML billion laughs", billionLaughs, []string{"Content-Type: application/yaml", "Content-Length: " + strconv.Itoa(len(billionLaughs))}, apiAnswers(400)},
	}
	var out []hostileCase
	for _, v := range variants {
		body, hdrs := v.body, append([]string{auth}, v.hdrs...)
		if !strings.Contains(strings.Join(hdrs, "\n"), "Content-Length") && !strings.Contains(strings.Join(hdrs, "\n"), "Transfer-Encoding") {
			hdrs = append(hdrs, "Content-Length: "+strconv.Itoa(len(body)))
		}
		out = append(out, hostileCase{class: "body", name: v.name, want: v.want,
			send: func(t *testing.T, ua string) hostileOutcome {
				return h1(t, g, rawRequestBody("POST", list, ua, body, hdrs...))
			}})
	}
	return out
}

func chunked(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		n := min(len(s), 64<<10)
		fmt.Fprintf(&b, "%x\r\n%s\r\n", n, s[:n])
		s = s[n:]
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

func manyKeys(n int) string {
	var b strings.Builder
	b.WriteString(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"keys"},"data":{`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":1`, i)
	}
	b.WriteString("}}")
	return b.String()
}

const billionLaughs = `apiVersion: v1
kind: ConfigMap
metadata:
  name: laughs
data:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
`
