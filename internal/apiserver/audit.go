package apiserver

import (
	"context"
	"net"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/status"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/authn"
)

// Recorder puts a state change on the audit record. An error means it is not recorded and
// the change must not be reported as done.
type Recorder interface {
	Record(e *event.Event) error
}

// discard records nothing: for servers built without an audit pipeline (tests of the API alone).
type discard struct{}

func (discard) Record(*event.Event) error { return nil }

// stateEvent starts an audit event of a state change made through the API, with the caller's
// address.
func stateEvent(ctx context.Context, kind event.Kind, source string) *event.Event {
	e := &event.Event{Kind: kind, Source: source, Method: "gRPC"}
	addr := authn.ClientAddressFrom(ctx)
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	e.SourceIP = addr
	return e
}

// httpStatus is the status the REST API answers for err (nil: 200), which is what a state
// event records as its response code whether the call came by gRPC or REST.
func httpStatus(err error) int {
	if err == nil {
		return http.StatusOK
	}
	return runtime.HTTPStatusFromCode(status.Code(err))
}
