package capture

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// Extra keys naming the admission policies behind an answer of the API server.
const (
	// AdmissionPolicyKey names the policy that refused the request: a ValidatingAdmissionPolicy
	// (kaccess guardrails are kaccess-<guardrail>), or "PodSecurity/<level>" for Pod Security
	// Admission.
	AdmissionPolicyKey = "admission_policy"
	// AdmissionBindingKey names the ValidatingAdmissionPolicyBinding of that refusal.
	AdmissionBindingKey = "admission_binding"
	// AdmissionWarnedKey lists, comma-separated, the policies that let the request through
	// with a warning (guardrails in warn mode, Pod Security warn labels).
	AdmissionWarnedKey = "admission_warned"
)

// maxStatusBody bounds the copy of a refusal's body: a Status is a few hundred bytes.
const maxStatusBody = 16 << 10

var (
	vapDenied  = regexp.MustCompile(`ValidatingAdmissionPolicy '([^']+)'(?: with binding '([^']+)')? denied request`)
	vapWarned  = regexp.MustCompile(`ValidatingAdmissionPolicy '([^']+)'`)
	podSecured = regexp.MustCompile(`violates? PodSecurity "([^"]+)"`)
)

// wantsStatus reports whether a response is a refusal worth reading: one the API server
// answered (not the gateway) that admission may have given.
func (x *exchange) wantsStatus(code int) bool {
	return x.st != nil && x.st.Forwarded && x.st.Refusal == "" &&
		(code == http.StatusForbidden || code == http.StatusUnprocessableEntity || code == http.StatusBadRequest)
}

// statusMessage returns the message of a Status body in JSON or protobuf; "" for anything else.
func statusMessage(body []byte, contentType string) string {
	mt, _, _ := mime.ParseMediaType(contentType)
	var st metav1.Status
	switch mt {
	case "application/json":
		if json.Unmarshal(body, &st) != nil || st.Kind != "Status" {
			return ""
		}
	case "application/vnd.kubernetes.protobuf":
		if !bytes.HasPrefix(body, protobufMagic) {
			return ""
		}
		var u runtime.Unknown
		if u.Unmarshal(body[len(protobufMagic):]) != nil || u.Kind != "Status" || st.Unmarshal(u.Raw) != nil {
			return ""
		}
	default:
		return ""
	}
	return st.Message
}

// noteAdmission records which admission policy refused the request, from the Status in the
// response, and which warned, from its Warning headers.
func (x *exchange) noteAdmission(e *event.Event, withResponse bool) {
	set := func(k, v string) {
		if e.Extra == nil {
			e.Extra = make(map[string]string, 2)
		}
		e.Extra[k] = v
	}
	if withResponse && x.status != nil {
		msg := statusMessage(x.status, x.w.Header().Get("Content-Type"))
		if m := vapDenied.FindStringSubmatch(msg); m != nil {
			set(AdmissionPolicyKey, m[1])
			if m[2] != "" {
				set(AdmissionBindingKey, m[2])
			}
		} else if m := podSecured.FindStringSubmatch(msg); m != nil {
			set(AdmissionPolicyKey, "PodSecurity/"+m[1])
		}
	}
	var warned []string
	for _, w := range x.w.Header().Values("Warning") {
		for _, m := range vapWarned.FindAllStringSubmatch(w, -1) {
			warned = append(warned, m[1])
		}
		if m := podSecured.FindStringSubmatch(w); m != nil {
			warned = append(warned, "PodSecurity/"+m[1])
		}
	}
	if len(warned) > 0 {
		slices.Sort(warned)
		set(AdmissionWarnedKey, strings.Join(slices.Compact(warned), ","))
	}
}
