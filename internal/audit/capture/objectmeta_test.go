package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"
)

const protobufType = "application/vnd.kubernetes.protobuf"

// protobufBody encodes obj as the API server sends it to client-go.
func protobufBody(t testing.TB, obj runtime.Object) []byte {
	t.Helper()
	enc := scheme.Codecs.EncoderForVersion(protobuf.NewSerializer(scheme.Scheme, scheme.Scheme), corev1.SchemeGroupVersion)
	var buf bytes.Buffer
	if err := enc.Encode(obj, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func jsonBody(t testing.TB, obj any) []byte {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// created is a ConfigMap as the API server answers a generateName create: metadata with
// managedFields, and a large data part after it.
func created() *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings-x7k2p", GenerateName: "settings-", Namespace: "team-a",
			UID: "d9a1e0c4-1111-2222-3333-444455556666", ResourceVersion: "1234", Labels: map[string]string{"app": "web"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl-create", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1"}}},
		Data: map[string]string{"big": strings.Repeat("x", 40000)},
	}
}

func TestCreatedObjectReadsTheNameFromTheStartOfTheResponse(t *testing.T) {
	t.Parallel()
	// A custom resource comes as unstructured JSON, keys sorted: the name follows annotations
	// and managedFields.
	cr := `{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"annotations":{"note":"{\"name\":\"not-this\"}"},` +
		`"creationTimestamp":"2026-01-01T00:00:00Z","generateName":"w-","managedFields":[{"manager":"m","fieldsV1":{"f:spec":{}}}],` +
		`"name":"w-abcde","namespace":"team-b","uid":"u"},"spec":{"name":"nor-this"}}`
	tests := []struct {
		name, contentType, encoding string
		body                        []byte
		wantName, wantNS            string
	}{
		{name: "typed JSON", contentType: "application/json", body: jsonBody(t, created()), wantName: "settings-x7k2p", wantNS: "team-a"},
		{name: "custom resource", contentType: "application/json", body: []byte(cr), wantName: "w-abcde", wantNS: "team-b"},
		{name: "escaped name", contentType: "application/json", body: []byte(`{"metadata":{"name":"a\u002db","namespace":"n"}}`), wantName: "a-b", wantNS: "n"},
		{name: "white space", contentType: "application/json; charset=utf-8", body: []byte("{\n \"kind\" : \"X\" ,\n \"metadata\" : {\n  \"name\" : \"pretty\"\n }\n}"), wantName: "pretty"},
		{name: "cluster-scoped", contentType: "application/json", body: []byte(`{"kind":"Namespace","metadata":{"name":"team-c","uid":"u"}}`), wantName: "team-c"},
		{name: "no name (a review)", contentType: "application/json", body: []byte(`{"kind":"SelfSubjectAccessReview","metadata":{"creationTimestamp":null},"status":{"allowed":true}}`)},
		{name: "name that is no string", contentType: "application/json", body: []byte(`{"metadata":{"name":null,"namespace":"n"}}`), wantNS: "n"},
		{name: "not an object", contentType: "application/json", body: []byte(`[1,2]`)},
		{name: "protobuf", contentType: protobufType, body: protobufBody(t, created()), wantName: "settings-x7k2p", wantNS: "team-a"},
		{name: "gzip JSON", contentType: "application/json", encoding: "gzip", body: gzipped(t, jsonBody(t, created())), wantName: "settings-x7k2p", wantNS: "team-a"},
		{name: "gzip protobuf", contentType: protobufType, encoding: "gzip", body: gzipped(t, protobufBody(t, created())), wantName: "settings-x7k2p", wantNS: "team-a"},
		{name: "other encoding", contentType: "application/json", encoding: "br", body: []byte(`{"metadata":{"name":"x"}}`)},
		{name: "other type", contentType: "application/cbor", body: []byte{0xd9, 0xd9, 0xf7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			name, ns, done := createdObject(tt.body, tt.contentType, tt.encoding)
			if name != tt.wantName || ns != tt.wantNS || !done {
				t.Errorf("got %q %q done %v, want %q %q done", name, ns, done, tt.wantName, tt.wantNS)
			}
			// Every prefix either says it needs more or has the answer.
			for i := range len(tt.body) {
				name, ns, done := createdObject(tt.body[:i], tt.contentType, tt.encoding)
				if done && (name != tt.wantName || ns != tt.wantNS) {
					t.Fatalf("prefix of %d bytes: %q %q done, want %q %q", i, name, ns, tt.wantName, tt.wantNS)
				}
				if name != "" && name != tt.wantName || ns != "" && ns != tt.wantNS {
					t.Fatalf("prefix of %d bytes: %q %q", i, name, ns)
				}
			}
		})
	}
}

func FuzzJSONMeta(f *testing.F) {
	f.Add([]byte(`{"kind":"ConfigMap","metadata":{"name":"a","namespace":"b"},"data":{"k":"v"}}`))
	f.Add([]byte(`{"metadata":{"annotations":{"x":"{\"name\":1}"},"name":"a\"b"}}`))
	f.Add([]byte(`{"metadata":[{"name":"x"}],"x":{"metadata":{"name":"y"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, ns, done := jsonMeta(b)
		var want struct {
			Metadata map[string]any `json:"metadata"`
		}
		if !done || !json.Valid(b) || json.Unmarshal(b, &want) != nil || bytes.Contains(bytes.ToLower(b), []byte(`\"`)) {
			return
		}
		// encoding/json matches keys without regard to case and keeps the last of a repeated
		// key; the API server writes each key once, in its own case: compare only then.
		if bytes.Count(b, []byte(`"metadata"`)) != 1 || bytes.Count(b, []byte(`"name"`)) > 1 || bytes.Count(b, []byte(`"namespace"`)) > 1 ||
			!bytes.Contains(b, []byte(`"metadata"`)) {
			return
		}
		wantName, _ := want.Metadata["name"].(string)
		wantNS, _ := want.Metadata["namespace"].(string)
		if name != wantName || ns != wantNS {
			t.Fatalf("%s: got %q %q, want %q %q", b, name, ns, wantName, wantNS)
		}
	})
}

// createHandler answers a create as the API server does: 201 with the object, written in
// chunks of the given size (ReverseProxy writes what each read from the API server returned).
func createHandler(body []byte, contentType string, chunk int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(http.StatusCreated)
		for len(body) > 0 {
			n := min(chunk, len(body))
			w.Write(body[:n])
			body = body[n:]
		}
	})
}

func TestCreateIsRecordedWithTheNameTheAPIServerGave(t *testing.T) {
	t.Parallel()
	cm := jsonBody(t, created())
	tests := []struct {
		name, path, contentType string
		body                    []byte
		chunk                   int
		code                    int
		wantName, wantNS        string
	}{
		{name: "JSON in one write", path: "/api/v1/namespaces/team-a/configmaps", contentType: "application/json", body: cm, chunk: 1 << 20,
			wantName: "settings-x7k2p", wantNS: "team-a"},
		{name: "JSON in small writes", path: "/api/v1/namespaces/team-a/configmaps", contentType: "application/json", body: cm, chunk: 7,
			wantName: "settings-x7k2p", wantNS: "team-a"},
		{name: "protobuf", path: "/api/v1/namespaces/team-a/configmaps", contentType: protobufType, body: protobufBody(t, created()), chunk: 100,
			wantName: "settings-x7k2p", wantNS: "team-a"},
		{name: "namespace", path: "/api/v1/namespaces", contentType: "application/json", body: []byte(`{"kind":"Namespace","metadata":{"name":"team-c"}}`),
			chunk: 1 << 20, wantName: "team-c", wantNS: "team-c"},
		{name: "cluster-scoped", path: "/apis/rbac.authorization.k8s.io/v1/clusterroles", contentType: "application/json",
			body: []byte(`{"kind":"ClusterRole","metadata":{"name":"reader"}}`), chunk: 1 << 20, wantName: "reader"},
		{name: "a refused create keeps what the URL says", path: "/api/v1/namespaces/team-a/configmaps", contentType: "application/json",
			body: []byte(`{"kind":"Status","metadata":{},"reason":"AlreadyExists","details":{"name":"x"}}`), chunk: 1 << 20, code: 409, wantNS: "team-a"},
		{name: "the URL's name stands", path: "/api/v1/namespaces/team-a/serviceaccounts/builder/token", contentType: "application/json",
			body: []byte(`{"kind":"TokenRequest","metadata":{"name":"other","namespace":"team-a"}}`), chunk: 1 << 20, wantName: "builder", wantNS: "team-a"},
		{name: "a name too far in", path: "/apis/example.com/v1/namespaces/team-a/widgets", contentType: "application/json",
			body: []byte(`{"metadata":{"annotations":{"a":"` + strings.Repeat("x", maxMetaScan) + `"},"name":"far"}}`), chunk: 4096, wantNS: "team-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := openSpool(t, 8<<20)
			c := newCapture(t, s, nil)
			h := createHandler(tt.body, tt.contentType, tt.chunk)
			if tt.code != 0 {
				h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", tt.contentType)
					w.WriteHeader(tt.code)
					w.Write(tt.body)
				})
			}
			srv := httptest.NewServer(chain(t, c, h))
			defer srv.Close()
			resp, body := do(t, srv, "POST", tt.path, `{"metadata":{"generateName":"settings-"}}`, "Content-Type", "application/json")
			if body != string(tt.body) {
				t.Fatalf("the client got %d bytes of %d", len(body), len(tt.body))
			}
			resp.Body.Close()
			recs := records(t, s)
			if len(recs) != 1 {
				t.Fatalf("%d records", len(recs))
			}
			e := recs[0]
			if e.Verb != "create" || e.Name != tt.wantName || e.Namespace != tt.wantNS {
				t.Errorf("record: verb %q name %q namespace %q, want create %q %q", e.Verb, e.Name, e.Namespace, tt.wantName, tt.wantNS)
			}
			if strings.Contains(tt.path, "configmaps") && e.ResponseBody != nil {
				t.Errorf("configmaps are recorded at Metadata level, but the response body was kept: %s", e.ResponseBody)
			}
		})
	}
}

// BenchmarkCreate is BenchmarkRequest's with-capture case for a create whose response names
// the object: what looking for the name adds.
func BenchmarkCreate(b *testing.B) {
	s := openSpool(b, 1<<30)
	c := newCapture(b, s, nil)
	for _, tc := range []struct {
		name, contentType string
		body              []byte
	}{
		{"json", "application/json", jsonBody(b, created())},
		{"protobuf", protobufType, protobufBody(b, created())},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := chain(b, c, createHandler(tc.body, tc.contentType, 32<<10))
			req := httptest.NewRequest("POST", "/api/v1/namespaces/team-a/configmaps", nil)
			req.Header.Set("Authorization", "Bearer x")
			w := &discard{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, req)
			}
		})
	}
}

func BenchmarkCreatedObject(b *testing.B) {
	for _, tc := range []struct {
		name, contentType string
		body              []byte
	}{
		{"json", "application/json", jsonBody(b, created())},
		{"protobuf", protobufType, protobufBody(b, created())},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				createdObject(tc.body[:32<<10], tc.contentType, "")
			}
		})
	}
}
