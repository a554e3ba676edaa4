// Package kubestatus writes errors the way kube-apiserver does: a metav1.Status JSON body, so
// kubectl prints the gateway's refusals as clearly as the API server's own.
package kubestatus

import (
	"encoding/json"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Write sends a Failure Status with the HTTP code and a message a person can act on.
func Write(w http.ResponseWriter, code int, reason metav1.StatusReason, message string) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  message,
		Reason:   reason,
		Code:     int32(code),
	}
	body, _ := json.Marshal(st)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// Unauthorized is 401: the credential is missing or not valid.
func Unauthorized(w http.ResponseWriter, message string) {
	Write(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, message)
}

// Forbidden is 403: authenticated, but not allowed.
func Forbidden(w http.ResponseWriter, message string) {
	Write(w, http.StatusForbidden, metav1.StatusReasonForbidden, message)
}

// BadRequest is 400: the request itself is malformed or carries headers it must not.
func BadRequest(w http.ResponseWriter, message string) {
	Write(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, message)
}
