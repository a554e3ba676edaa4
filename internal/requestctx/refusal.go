package requestctx

import "context"

// Refusal says why the gateway answered a request itself instead of passing on the API server's
// answer. The audit record keeps it as refusal_reason, so a refusal is never mistaken for
// access the API server allowed.
type Refusal string

// Reasons for refusing a request before it reaches the API server (decision "refused").
const (
	RefusedUnauthenticated     Refusal = "unauthenticated"       // no valid credential (401)
	RefusedIdentityHeader      Refusal = "identity_header"       // the client sent identity headers (Impersonate-*, X-Remote-*, a second Authorization, hop-by-hop tricks)
	RefusedImpersonation       Refusal = "impersonation_refused" // kubectl --as that the API server says the user may not do
	RefusedPrivilegedGroup     Refusal = "privileged_group"      // an identity carrying system:masters
	RefusedRateLimited         Refusal = "rate_limited"          // 429 from the gateway
	RefusedTooLarge            Refusal = "too_large"             // body over limits.maxBodyBytes
	RefusedUpstreamUnavailable Refusal = "upstream_unavailable"  // the API server could not be reached (nothing was sent)
	RefusedBadRequest          Refusal = "bad_request"           // a request the gateway cannot parse or forward
)

// Reasons for a request that failed on the gateway's side after it may have reached the API
// server (decision "error"): whether it took effect is not known from the response.
const (
	FailedUpstreamTimeout Refusal = "upstream_timeout" // no answer within timeouts.request
	FailedUpstream        Refusal = "upstream_failed"  // the connection to the API server broke
	FailedClientClosed    Refusal = "client_closed"    // the client went away before the answer
	FailedAborted         Refusal = "response_aborted" // the response was cut off part way
	FailedInternal        Refusal = "internal_error"   // a fault in the gateway (500)
)

// Failure reports whether r is a failure (decision "error") rather than a refusal: the
// request may have reached the API server.
func (r Refusal) Failure() bool {
	switch r {
	case FailedUpstreamTimeout, FailedUpstream, FailedClientClosed, FailedAborted, FailedInternal:
		return true
	}
	return false
}

// Refuse notes on the request why the gateway answers it itself and, for identity-header
// refusals, the names (never the values) of the headers. The first reason noted wins: the step
// that refused knows best, and later steps only see its answer.
func Refuse(ctx context.Context, reason Refusal, headers ...string) {
	st := From(ctx)
	if st == nil || st.Refusal != "" {
		return
	}
	st.Refusal = reason
	st.RefusedHeaders = headers
}
