package capture

import (
	"encoding/json"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestStatusMessage(t *testing.T) {
	const msg = "deployments.apps \"x\" is forbidden: ValidatingAdmissionPolicy 'kaccess-registries' with binding 'kaccess-registries' denied request: guardrail registries: image(s) docker.io/nginx not from an allowed registry"
	st := metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure", Message: msg, Reason: metav1.StatusReasonForbidden, Code: 403}
	js, _ := json.Marshal(st)
	raw, err := st.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	u := runtime.Unknown{TypeMeta: runtime.TypeMeta{APIVersion: "v1", Kind: "Status"}, Raw: raw, ContentType: "application/vnd.kubernetes.protobuf"}
	ub, err := u.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	pb := append(append([]byte{}, protobufMagic...), ub...)
	for _, tc := range []struct {
		name, contentType string
		body              []byte
		want              string
	}{
		{"json", "application/json", js, msg},
		{"json with charset", "application/json; charset=utf-8", js, msg},
		{"protobuf", "application/vnd.kubernetes.protobuf", pb, msg},
		{"cut short", "application/json", js[:40], ""},
		{"not a status", "application/json", []byte(`{"kind":"Deployment","message":"ValidatingAdmissionPolicy 'x' denied request"}`), ""},
		{"text", "text/plain", []byte(msg), ""},
	} {
		if got := statusMessage(tc.body, tc.contentType); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	m := vapDenied.FindStringSubmatch(msg)
	if m == nil || m[1] != "kaccess-registries" || m[2] != "kaccess-registries" {
		t.Errorf("policy and binding from %q: %q", msg, m)
	}
	if m := podSecured.FindStringSubmatch(`pods "host" is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true)`); m == nil || m[1] != "baseline:latest" {
		t.Errorf("pod security level: %q", m)
	}
}
