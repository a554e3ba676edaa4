package capture

import (
	"net/http"
	"strings"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/requestctx"
)

// outcome decides what a request's record says happened, from where its answer came from: the
// API server's answer for a forwarded request, the reason a step of the gateway gave when it
// answered itself. A status code alone cannot tell them apart (a 400 or 403 may come from
// either), and an auditor must never read a refusal as access that was allowed.
//
// Forwarded requests follow Kubernetes' own audit: anything the API server answered after
// authorizing it is "allow" (404, 409, 422, ...), its 403 is "deny", and the answers it gives
// before authorizing (401 for the gateway's own credential, 429 from priority and fairness)
// and 5xx are "error".
func outcome(code int, st *requestctx.State) (event.Decision, requestctx.Refusal) {
	if st == nil {
		return event.DecisionFor(code), ""
	}
	switch {
	case st.Refusal.Failure():
		return event.DecisionError, st.Refusal
	case st.Refusal != "":
		return event.DecisionRefused, st.Refusal
	case st.Forwarded:
		switch {
		case code == http.StatusForbidden:
			return event.DecisionDeny, ""
		case code == http.StatusUnauthorized, code == http.StatusTooManyRequests, code >= 500, code == 0:
			return event.DecisionError, ""
		}
		return event.DecisionAllow, ""
	}
	// The gateway answered without a step saying why: judge by the code, and never as allowed.
	switch {
	case code == http.StatusUnauthorized:
		return event.DecisionRefused, requestctx.RefusedUnauthenticated
	case code == http.StatusRequestEntityTooLarge:
		return event.DecisionRefused, requestctx.RefusedTooLarge
	case code == http.StatusTooManyRequests:
		return event.DecisionRefused, requestctx.RefusedRateLimited
	case code >= 500 || code == 0:
		return event.DecisionError, requestctx.FailedInternal
	}
	return event.DecisionRefused, requestctx.RefusedBadRequest
}

// refusedHeadersKey is the Extra key naming the identity headers a request was refused for
// (names only: their values may be credentials).
const refusedHeadersKey = "refused_headers"

// setOutcome fills the response code, decision, refusal reason and refused header names.
func setOutcome(e *event.Event, code int, st *requestctx.State) {
	e.ResponseCode = code
	d, reason := outcome(code, st)
	e.Decision, e.RefusalReason = d, string(reason)
	if st != nil && len(st.RefusedHeaders) > 0 {
		if e.Extra == nil {
			e.Extra = make(map[string]string, 1)
		}
		e.Extra[refusedHeadersKey] = strings.Join(st.RefusedHeaders, ",")
	}
}
