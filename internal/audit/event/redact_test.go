package event

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
)

const secretJSON = `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db","namespace":"shop",` +
	`"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"password\":\"aHVudGVyMg==\"}}","team":"pay"}},` +
	`"type":"Opaque","data":{"password":"aHVudGVyMg==","user":"YWRtaW4="},"stringData":{"extra":"plain-secret"}}`

var secretCtx = BodyContext{ContentType: "application/json", Resource: "secrets"}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("recorded body is not a JSON object: %v\n%s", err, b)
	}
	return m
}

// at walks a decoded JSON value by object keys and array indexes.
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func mustNotContain(t *testing.T, out []byte, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if bytes.Contains(out, []byte(s)) {
			t.Errorf("recorded body contains %q:\n%s", s, out)
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		ctx     BodyContext
		secrets []string                 // must not appear in the output
		want    map[string][]any         // value wanted at a path (last element)
		keep    []string                 // must still appear
		check   func(*testing.T, []byte) // extra checks
	}{
		{
			name: "secret", body: secretJSON, ctx: secretCtx,
			secrets: []string{"aHVudGVyMg==", "YWRtaW4=", "plain-secret"},
			want: map[string][]any{
				"data.password": {"data", "password", Redacted},
				"data.user":     {"data", "user", Redacted},
				"stringData":    {"stringData", "extra", Redacted},
				"last-applied":  {"metadata", "annotations", lastApplied, Redacted},
				"other annot.":  {"metadata", "annotations", "team", "pay"},
				"name kept":     {"metadata", "name", "db"},
			},
		},
		{
			name: "secret found by kind whatever the URL", body: secretJSON, ctx: BodyContext{Resource: "widgets", APIGroup: "example.com"},
			secrets: []string{"aHVudGVyMg==", "plain-secret"},
		},
		{
			name: "secret list",
			body: `{"apiVersion":"v1","kind":"SecretList","metadata":{},"items":[` +
				`{"metadata":{"name":"a"},"data":{"k":"c2VjcmV0MQ=="}},{"metadata":{"name":"b"},"data":{"k":"c2VjcmV0Mg=="},"stringData":{"s":"xyz-plain"}}]}`,
			ctx:     BodyContext{Resource: "secrets"},
			secrets: []string{"c2VjcmV0MQ==", "c2VjcmV0Mg==", "xyz-plain"},
			want:    map[string][]any{"item 1": {"items", 1, "data", "k", Redacted}, "item name": {"items", 0, "metadata", "name", "a"}},
		},
		{
			name:    "secrets in a generic List",
			body:    `{"apiVersion":"v1","kind":"List","items":[{"kind":"ConfigMap","data":{"a":"b"}},{"kind":"Secret","data":{"k":"c2VjcmV0MQ=="}}]}`,
			ctx:     BodyContext{},
			secrets: []string{"c2VjcmV0MQ=="},
			want:    map[string][]any{"configmap kept": {"items", 0, "data", "a", "b"}},
		},
		{
			name:    "strategic merge patch to a secret has no kind",
			body:    `{"data":{"password":"bmV3cGFzcw=="}}`,
			ctx:     BodyContext{ContentType: "application/strategic-merge-patch+json", Resource: "secrets"},
			secrets: []string{"bmV3cGFzcw=="},
			want:    map[string][]any{"key kept": {"data", "password", Redacted}},
		},
		{
			name:    "json patch to a secret",
			body:    `[{"op":"replace","path":"/data/password","value":"bmV3cGFzcw=="},{"op":"add","path":"/data","value":{"k":"dmFs"}}]`,
			ctx:     BodyContext{ContentType: "application/json-patch+json", Resource: "secrets"},
			secrets: []string{"bmV3cGFzcw==", "dmFs"},
		},
		{
			name:    "server-side apply YAML to a secret",
			body:    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2\n",
			ctx:     BodyContext{ContentType: "application/apply-patch+yaml", Resource: "secrets"},
			secrets: []string{"hunter2"},
			want:    map[string][]any{"as JSON": {"stringData", "password", Redacted}},
		},
		{
			name: "watch event stream of secrets",
			body: `{"type":"ADDED","object":{"kind":"Secret","metadata":{"name":"a"},"data":{"k":"c2VjcmV0MQ=="}}}` + "\n" +
				`{"type":"MODIFIED","object":{"kind":"Secret","metadata":{"name":"a"},"data":{"k":"c2VjcmV0Mg=="}}}` + "\n",
			ctx:     BodyContext{Resource: "secrets"},
			secrets: []string{"c2VjcmV0MQ==", "c2VjcmV0Mg=="},
			check: func(t *testing.T, out []byte) {
				var evs []map[string]any
				if err := json.Unmarshal(out, &evs); err != nil || len(evs) != 2 || at(evs[1], "type") != "MODIFIED" {
					t.Errorf("stream not recorded as an array of 2 events: %v %s", err, out)
				}
			},
		},
		{
			name: "kubectl get table of secrets",
			body: `{"kind":"Table","apiVersion":"meta.k8s.io/v1","columnDefinitions":[{"name":"Name"}],"rows":[` +
				`{"cells":["db"],"object":{"kind":"PartialObjectMetadata","metadata":{"name":"db","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"p\":\"c2VjcmV0MQ==\"}}"}}}},` +
				`{"cells":["x"],"object":{"kind":"Secret","metadata":{"name":"x"},"data":{"p":"c2VjcmV0Mg=="}}}]}`,
			ctx:     BodyContext{Resource: "secrets"},
			secrets: []string{"c2VjcmV0MQ==", "c2VjcmV0Mg=="},
			want:    map[string][]any{"cells kept": {"rows", 0, "cells", 0, "db"}},
		},
		{
			name: "token request response",
			body: `{"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1","spec":{"audiences":["https://kubernetes.default.svc"],"expirationSeconds":3600},` +
				`"status":{"token":"eyJhbGciOiJSUzI1NiJ9.payload.sig","expirationTimestamp":"2026-11-25T14:30:00Z"}}`,
			ctx:     BodyContext{Resource: "serviceaccounts", Subresource: "token"},
			secrets: []string{"eyJhbGciOiJSUzI1NiJ9"},
			want:    map[string][]any{"token": {"status", "token", Redacted}, "expiry kept": {"status", "expirationTimestamp", "2026-11-25T14:30:00Z"}},
		},
		{
			name:    "token request without kind, by subresource",
			body:    `{"status":{"token":"eyJhbGciOiJSUzI1NiJ9.x.y"}}`,
			ctx:     BodyContext{Resource: "serviceaccounts", Subresource: "token"},
			secrets: []string{"eyJhbGciOiJSUzI1NiJ9"},
		},
		{
			name: "token review",
			body: `{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":"sha256~abcdefsecret"},` +
				`"status":{"authenticated":true,"user":{"username":"alice"}}}`,
			ctx:     BodyContext{APIGroup: "authentication.k8s.io", Resource: "tokenreviews"},
			secrets: []string{"sha256~abcdefsecret"},
			want:    map[string][]any{"user kept": {"status", "user", "username", "alice"}},
		},
		{
			name:    "credential-like fields anywhere",
			body:    `{"kind":"Widget","spec":{"auth":{"Authorization":"Bearer abc.def","password":"pw123","token":{"nested":"kept"}}}}`,
			ctx:     BodyContext{APIGroup: "example.com", Resource: "widgets"},
			secrets: []string{"abc.def", "pw123"},
			want:    map[string][]any{"non-string token value walked": {"spec", "auth", "token", "nested", "kept"}},
		},
	}
	var r Redactor
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := r.Redact([]byte(tt.body), tt.ctx)
			if !json.Valid(out) {
				t.Fatalf("recorded body is not valid JSON: %s", out)
			}
			mustNotContain(t, out, tt.secrets...)
			if bytes.Contains(out, []byte(`\u003c`)) {
				t.Errorf("marker HTML-escaped: %s", out)
			}
			for name, w := range tt.want {
				path, val := w[:len(w)-1], w[len(w)-1]
				if got := at(decode(t, out), path...); got != val {
					t.Errorf("%s: %v = %v, want %v", name, path, got, val)
				}
			}
			if tt.check != nil {
				tt.check(t, out)
			}
		})
	}
}

func TestRedactLeavesConfigMapUntouched(t *testing.T) {
	t.Parallel()
	body := []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg","namespace":"shop"},` +
		`"data":{"log_level":"debug","app.yaml":"port: 8080\n"},  "binaryData":{"b":"AAEC"}}`)
	var r Redactor
	out := r.Redact(body, BodyContext{ContentType: "application/json", Resource: "configmaps"})
	if !bytes.Equal(out, body) {
		t.Errorf("ConfigMap changed:\n got %s\nwant %s", out, body)
	}
}

func TestRedactTruncates(t *testing.T) {
	t.Parallel()
	big := `{"kind":"Secret","data":{"k":"c2VjcmV0"},"metadata":{"name":"` + strings.Repeat("ü", 700) + `"}}`
	r := Redactor{MaxBodyBytes: 1001}
	out := r.Redact([]byte(big), BodyContext{})
	m := decode(t, out)
	if m["kaccess.truncated"] != true || m["originalBytes"] != float64(len(big)) {
		t.Fatalf("no truncation marker: %s", out)
	}
	prefix, _ := m["prefix"].(string)
	if len(prefix) == 0 || len(prefix) > 1001 || len(prefix) < 999 || !strings.HasPrefix(prefix, `{"data":{"k":"<redacted>"}`) {
		t.Errorf("prefix of %d bytes: %q", len(prefix), prefix)
	}
	if strings.ContainsRune(prefix, '\uFFFD') {
		t.Error("prefix cut inside a UTF-8 sequence")
	}
	mustNotContain(t, out, "c2VjcmV0")

	small := Redactor{}
	if out := small.Redact([]byte(`{"a":"`+strings.Repeat("x", DefaultMaxBodyBytes)+`"}`), BodyContext{}); !bytes.Contains(out, []byte("kaccess.truncated")) {
		t.Error("default cap of 64 KiB not applied")
	}
}

func TestRedactOmitsWhatItCannotRead(t *testing.T) {
	t.Parallel()
	proto := append([]byte("k8s\x00\n\x02v1\x12\x06Secret"), 0x1a, 0x05, 's', 'e', 'c', 'r', 't')
	tests := []struct {
		name   string
		body   []byte
		ctx    BodyContext
		reason string
	}{
		{"protobuf by content type", proto, BodyContext{ContentType: "application/vnd.kubernetes.protobuf", Resource: "secrets"}, "protobuf body (application/vnd.kubernetes.protobuf)"},
		{"protobuf by magic", proto, BodyContext{}, "protobuf body (no content type)"},
		{"cbor", []byte{0xd9, 0xd9, 0xf7, 0xa1}, BodyContext{ContentType: "application/cbor"}, "CBOR body (application/cbor)"},
		{"plain text", []byte("log line with password=secrt\n"), BodyContext{ContentType: "text/plain"}, "not JSON (text/plain)"},
		{"broken JSON", []byte(`{"kind":"Secret","data":{"k":"secrt"`), BodyContext{}, "not JSON (no content type)"},
		{"broken YAML", []byte("a: [\n"), BodyContext{ContentType: "application/yaml"}, "YAML body that does not parse"},
		{"too large to parse", []byte(`{"k":"` + strings.Repeat("s", 200) + `"}`), BodyContext{}, "body too large to redact"},
	}
	r := Redactor{MaxParseBytes: 100}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := r.Redact(tt.body, tt.ctx)
			m := decode(t, out)
			if m["kaccess.omitted"] != tt.reason || m["originalBytes"] != float64(len(tt.body)) {
				t.Errorf("got %s, want reason %q", out, tt.reason)
			}
			mustNotContain(t, out, "secrt")
		})
	}
}

func TestCaptureFollowsLevel(t *testing.T) {
	t.Parallel()
	req, resp := []byte(`{"kind":"Secret","data":{"k":"cmVx"}}`), []byte(`{"kind":"Secret","data":{"k":"cmVzcA=="}}`)
	var r Redactor
	for _, tt := range []struct {
		level         Level
		wantReq, want bool
	}{
		{LevelNone, false, false}, {LevelMetadata, false, false}, {LevelRequest, true, false}, {LevelRequestResponse, true, true},
	} {
		e := &Event{Level: tt.level, Resource: "secrets", RequestBody: []byte("stale")}
		r.Capture(e, req, "application/json", resp, "application/json")
		if (e.RequestBody != nil) != tt.wantReq || (e.ResponseBody != nil) != tt.want {
			t.Errorf("%s: request body %q, response body %q", tt.level, e.RequestBody, e.ResponseBody)
		}
		mustNotContain(t, append(e.RequestBody, e.ResponseBody...), "cmVx", "cmVzcA==")
	}
	if out := r.Redact(nil, BodyContext{}); out != nil {
		t.Errorf("empty body recorded as %q", out)
	}
}

func FuzzRedact(f *testing.F) {
	f.Add([]byte(secretJSON), "application/json", "secrets", "")
	f.Add([]byte(`[{"op":"add","path":"/data","value":{"k":"v"}}]`), "application/json-patch+json", "secrets", "")
	f.Add([]byte(`{"type":"ADDED","object":{"kind":"SecretList","items":[{"data":{"a":1}}]}} {"x":null}`), "", "secrets", "")
	f.Add([]byte("kind: TokenRequest\nstatus: {token: x}\n"), "application/yaml", "serviceaccounts", "token")
	f.Add([]byte("k8s\x00"), "", "", "")
	r := Redactor{MaxBodyBytes: 256}
	f.Fuzz(func(t *testing.T, body []byte, ct, resource, sub string) {
		out := r.Redact(body, BodyContext{ContentType: ct, Resource: resource, Subresource: sub})
		if len(body) == 0 {
			if out != nil {
				t.Fatalf("empty body recorded as %q", out)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("recorded body is not valid JSON: %q", out)
		}
	})
}

func TestRedactURI(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/api/v1/namespaces/a/pods", "/api/v1/namespaces/a/pods"},
		{"/api/v1/pods?limit=500&watch=true", "/api/v1/pods?limit=500&watch=true"},
		{"/api/v1/pods?access_token=abc.def&limit=1", "/api/v1/pods?access_token=%3Credacted%3E&limit=1"},
		{"/x?Token=abc&password=&flag", "/x?Token=%3Credacted%3E&password=%3Credacted%3E&flag"},
		{"/x?%74oken=abc", "/x?%74oken=%3Credacted%3E"},
		{"/x?", "/x?"},
	}
	for _, tt := range tests {
		if got := RedactURI(tt.in); got != tt.want {
			t.Errorf("RedactURI(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = RedactURI("/api/v1/pods?limit=500") }); n > 1 {
		t.Errorf("RedactURI allocates %.0f times on a clean URI", n)
	}
}

func BenchmarkRedactSecret(b *testing.B) {
	body := []byte(secretJSON)
	var r Redactor
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		r.Redact(body, secretCtx)
	}
}

func BenchmarkRedactUnchanged(b *testing.B) {
	body := []byte(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"shop","labels":{"app":"web"}},` +
		`"spec":{"replicas":3,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},` +
		`"spec":{"containers":[{"name":"web","image":"nginx:1.27","ports":[{"containerPort":80}]}]}}}}`)
	var r Redactor
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		r.Redact(body, BodyContext{APIGroup: "apps", Resource: "deployments"})
	}
}

// client-go speaks protobuf for built-in kinds: such bodies are recorded as JSON, redacted.
func TestRedactDecodesKubernetesProtobuf(t *testing.T) {
	t.Parallel()
	info, ok := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	if !ok {
		t.Fatal("no protobuf serializer")
	}
	enc := scheme.Codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion)
	var buf bytes.Buffer
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "prod"}, Data: map[string][]byte{"password": []byte("hunter2")}}
	if err := enc.Encode(secret, &buf); err != nil {
		t.Fatal(err)
	}
	out := (&Redactor{}).Redact(buf.Bytes(), BodyContext{ContentType: runtime.ContentTypeProtobuf, Resource: "secrets"})
	if bytes.Contains(out, []byte("hunter2")) || bytes.Contains(out, []byte("aHVudGVyMg")) {
		t.Fatalf("secret data recorded: %s", out)
	}
	m := decode(t, out)
	if m["kind"] != "Secret" || m["data"].(map[string]any)["password"] != Redacted {
		t.Fatalf("got %s", out)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"colour": "blue"}}}
	buf.Reset()
	if err := enc.Encode(svc, &buf); err != nil {
		t.Fatal(err)
	}
	if out := (&Redactor{}).Redact(buf.Bytes(), BodyContext{ContentType: runtime.ContentTypeProtobuf, Resource: "services"}); !bytes.Contains(out, []byte(`"colour":"blue"`)) {
		t.Fatalf("service body: %s", out)
	}
}
