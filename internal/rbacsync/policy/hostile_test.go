package policy

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fieldProblem is one line of a Validate error: "path: problem".
var fieldProblem = regexp.MustCompile(`^(apiVersion|kind|(roles|bindings|elevations)\[\d+\][a-zA-Z0-9.\[\]]*): `)

// checkLoadError: a decode error says so; a validation error is one "path: problem" per line.
func checkLoadError(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if strings.HasPrefix(msg, "decode access policy: ") {
		return
	}
	for _, line := range strings.Split(msg, "\n") {
		if !fieldProblem.MatchString(line) {
			t.Fatalf("validation error line %q carries no field path (in %q)", line, msg)
		}
	}
}

// FuzzLoad: Load never panics; a refused policy says where; a policy that loads encodes (as
// JSON, which is YAML) to a document that loads to the same value.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(goodPolicy))
	for _, s := range hostilePolicies {
		if len(s.yaml) <= 64<<10 {
			f.Add([]byte(s.yaml))
		}
	}
	f.Add([]byte("apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\n"))
	f.Add([]byte(`{"apiVersion":"kaccess.io/v1alpha1","kind":"AccessPolicy","roles":[{"name":"r","ref":{"kind":"ClusterRole","name":"view"}}],` +
		`"bindings":[{"name":"b","groups":["g"],"role":"r","namespaceSelector":{"matchExpressions":[{"key":"k","operator":"Exists"}]}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		p, err := Load(data)
		if err != nil {
			checkLoadError(t, err)
			return
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("encode a loaded policy: %v", err)
		}
		back, err := Load(out)
		if err != nil {
			t.Fatalf("the encoding of a loaded policy does not load: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(p, back) {
			t.Fatalf("round trip changed the policy:\n%+v\n%+v", p, back)
		}
	})
}

// hostilePolicies are malformed policy files, each with what its error must say.
var hostilePolicies = []struct {
	name string
	yaml string
	want string
}{
	{"billion laughs", billionLaughs, "decode access policy"},
	{"alias to a map in a list", "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nx: &a {k: v}\nroles: [*a, *a]\n", "decode access policy"},
	{"recursive alias", "apiVersion: &a [*a]\n", "decode access policy"},
	{"duplicate key", "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nkind: AccessPolicy\n", `line 3: key "kind" already set`},
	{"duplicate nested key", "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nroles:\n- name: a\n  name: b\n", `line 5: key "name" already set`},
	{"unknown top field", "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nadmins: [me]\n", `unknown field "admins"`},
	{"unknown nested field", "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nbindings:\n- name: b\n  group: [x]\n", `unknown field "bindings[0].group"`},
	{"case variant of a field", "apiVersion: kaccess.io/v1alpha1\nKind: AccessPolicy\n", `unknown field "Kind"`},
	{"wrong type: list for string", "apiVersion: [kaccess.io/v1alpha1]\nkind: AccessPolicy\n", "apiVersion"},
	{"wrong type: string for list", "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nroles: admin\n", "roles"},
	{"wrong type: string for bool", "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nbindings:\n- name: b\n  clusterWide: yes please\n", "clusterWide"},
	{"wrong type: float for int", "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nelevations:\n- name: e\n  approvals: 1.5\n", "approvals"},
	{"huge int", "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nelevations:\n- name: e\n  approvals: 99999999999999999999999\n", "approvals"},
	{"a list, not a document", "- a\n- b\n", "decode access policy"},
	{"a scalar", "hello", "decode access policy"},
	{"empty", "", "apiVersion: must be"},
	{"null", "null", "apiVersion: must be"},
	{"two documents", "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\n---\nroles: [{name: x}]\n", "more than one YAML document"},
	{"tab indentation", "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nroles:\n\t- name: x\n", "decode access policy"},
	{"NUL byte", "apiVersion: kaccess.io/v1alpha1\x00\nkind: AccessPolicy\n", ""},
	{"invalid UTF-8", "apiVersion: \"kaccess.io/v1alpha1\xff\"\nkind: AccessPolicy\n", ""},
	{"deep nesting", strings.Repeat("[", 10000) + strings.Repeat("]", 10000), "decode access policy"},
	{"huge file", hugePolicy(4 << 20), "exceeds the limit"},
	{"many problems", hugePolicy(1 << 20), "more problems"},
	{"name with newline", "apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nroles:\n- name: \"a\\nkind: x\"\n  ref: {kind: ClusterRole, name: view}\n", "roles[0].name"},
}

const billionLaughs = `apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
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

// hugePolicy is a policy of at least size bytes whose first role has a bad name and whose
// other roles share one name.
func hugePolicy(size int) string {
	var b strings.Builder
	b.WriteString("apiVersion: kaccess.io/v1alpha1\nkind: AccessPolicy\nroles:\n- name: Bad_Name\n  ref: {kind: ClusterRole, name: view}\n")
	for b.Len() < size {
		b.WriteString("- name: r\n  ref: {kind: ClusterRole, name: view}\n")
	}
	return b.String()
}

// TestLoadHostile: every malformed file is refused with an error that says what and where, in
// bounded time, and none is loaded.
func TestLoadHostile(t *testing.T) {
	t.Parallel()
	for _, tt := range hostilePolicies {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			p, err := Load([]byte(tt.yaml))
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("Load took %v", d)
			}
			if err == nil {
				t.Fatalf("Load accepted it: %+v", p)
			}
			if p != nil {
				t.Fatal("a policy returned with the error")
			}
			checkLoadError(t, err)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %.500q\nwant it to contain %q", err, tt.want)
			}
			if len(err.Error()) > 1<<20 {
				t.Errorf("error of %d bytes", len(err.Error()))
			}
		})
	}
}

// TestLoadDocumentMarkers: a leading ---, a trailing --- and a comment-only document are still
// one policy.
func TestLoadDocumentMarkers(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"leading":      "---\n" + goodPolicy,
		"trailing":     goodPolicy + "---\n",
		"comment only": goodPolicy + "---\n# nothing here\n",
	} {
		if _, err := Load([]byte(doc)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
