package capture

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	genericrequest "k8s.io/apiserver/pkg/endpoints/request"

	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/kubestatus"
	"github.com/kaccess/kaccess/internal/requestctx"
)

// maxUserAgent bounds the user agent kept per record: it is client text of any length.
const maxUserAgent = 1024

// errNotRecorded ends a response whose record could not be appended.
var errNotRecorded = errors.New("audit record could not be written; response withheld")

// Handler records every request that passes it. It must sit inside the steps that set the
// request's requestctx.State and RequestInfo, and outside authentication, so refused
// credentials are recorded too; authentication stores the identity in the State.
func (c *Capture) Handler(cluster string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.Full() {
			c.noteUnrecorded(c.cfg.OnFull == OnFullDeny)
			if c.cfg.OnFull == OnFullDeny {
				c.refused.Add(1)
				c.warnFull(nil)
				w.Header().Set("Retry-After", "30")
				kubestatus.Write(w, http.StatusServiceUnavailable, "ServiceUnavailable",
					"the gateway cannot record requests right now (its audit spool is full), so it refuses them; try again later")
				return
			}
			c.dropped.Add(1)
			c.warnFull(nil)
			next.ServeHTTP(w, r)
			return
		}
		c.recordGap()
		x := &exchange{c: c, w: w, r: r, start: c.cfg.Now(), contentLength: -1}
		x.st = requestctx.From(r.Context())
		x.fillRequest(cluster)
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &countingBody{ReadCloser: r.Body, x: x}
		}
		x.serve(next)
	})
}

// serve runs the rest of the chain and appends what is owed when it returns. A panic (a bug,
// or ReverseProxy's http.ErrAbortHandler when a response breaks off) still leaves its record
// before it goes on up: no request escapes the audit trail by ending badly.
func (x *exchange) serve(next http.Handler) {
	defer func() {
		if v := recover(); v != nil {
			if !x.finished {
				x.abandon(v)
			}
			panic(v)
		}
	}()
	next.ServeHTTP(x, x.r)
	x.finish()
}

// abandon records a request whose handler panicked: the ended record of a stream, or the
// complete record with what was answered so far (500 when nothing was, as withRecover sends).
func (x *exchange) abandon(v any) {
	reason := requestctx.FailedInternal
	if v == http.ErrAbortHandler {
		reason = requestctx.FailedAborted
	}
	requestctx.Refuse(x.r.Context(), reason)
	x.settle(http.StatusInternalServerError)
}

// exchange follows one request and its response.
type exchange struct {
	c     *Capture
	w     http.ResponseWriter
	r     *http.Request
	st    *requestctx.State
	start time.Time
	ev    event.Event

	ruleOnce sync.Once
	rule     event.Rule
	// The transport may still be sending the request body from its own goroutine while the
	// response is handled: reqMu guards the copy.
	reqMu   sync.Mutex
	reqBody []byte // kept only when the level records the request body
	resBody []byte // kept only at RequestResponse
	meta    metaScan
	status  []byte // a refusal's body, for the admission policy that refused (admission.go)

	code          int
	contentLength int64 // declared by the response; -1 when not known
	started       bool  // a started record was appended: an ended one follows
	recorded      bool  // the complete (or started) record is in the spool, or was not wanted
	finished      bool  // finish or abandon ran: nothing more is owed
	failed        bool  // appending failed under OnFullDeny

	bytesIn, bytesOut atomic.Int64 // atomic: hijacked streams count from their own goroutines
}

func (x *exchange) fillRequest(cluster string) {
	r, e := x.r, &x.ev
	e.Time = x.start.UTC().Truncate(time.Microsecond)
	e.Kind = event.KindRequest
	e.Cluster = cluster
	if x.st != nil {
		e.RequestID = x.st.ID
	}
	if info, ok := genericrequest.RequestInfoFrom(r.Context()); ok {
		e.SetRequestInfo(info)
	}
	e.SourceIP = clientIP(r, x.c.cfg.TrustedProxies)
	e.UserAgent = r.UserAgent()
	if len(e.UserAgent) > maxUserAgent {
		e.UserAgent = e.UserAgent[:maxUserAgent]
	}
	e.RequestURI = event.RedactURI(r.RequestURI)
	e.Method = r.Method
}

// policyRule evaluates the audit policy once, when the identity is known (authentication runs
// inside this handler, before the proxy reads the body or a response starts).
func (x *exchange) policyRule() event.Rule {
	x.ruleOnce.Do(func() {
		info, _ := genericrequest.RequestInfoFrom(x.r.Context())
		x.rule = x.c.cfg.Policy.Evaluate(event.Attributes(x.identity(), info))
	})
	return x.rule
}

func (x *exchange) identity() *authn.Identity {
	if x.st == nil {
		return nil
	}
	return x.st.Identity
}

func (x *exchange) maxParse() int {
	if n := x.c.cfg.Redactor.MaxParseBytes; n > 0 {
		return n
	}
	return event.DefaultMaxParseBytes
}

// keep appends p to a body copy, up to one byte more than the redactor will parse (so it
// knows the body was too large).
func (x *exchange) keep(dst []byte, p []byte) []byte {
	room := x.maxParse() + 1 - len(dst)
	if room <= 0 {
		return dst
	}
	return append(dst, p[:min(len(p), room)]...)
}

// Header implements http.ResponseWriter.
func (x *exchange) Header() http.Header { return x.w.Header() }

// WriteHeader appends the record first when the header is all the client will get, or when a
// long-running response starts; if that fails the client gets a 503 instead of the response.
func (x *exchange) WriteHeader(code int) {
	if x.code != 0 || (code >= 100 && code < 200 && code != http.StatusSwitchingProtocols) {
		x.w.WriteHeader(code)
		return
	}
	x.code = code
	x.ev.Latency = x.c.cfg.Now().Sub(x.start)
	if cl := x.w.Header().Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
			x.contentLength = n
		}
	}
	// A create names its object only in the response (generateName, or a POST to the
	// collection): look for the name there, whatever the level keeps of the body.
	x.meta.on = x.ev.Verb == "create" && x.ev.Name == "" && (code == http.StatusCreated || code == http.StatusOK)
	x.meta.setNamespace = x.ev.Namespace == ""
	if x.wantsStatus(code) {
		x.status = []byte{}
	}
	var ok = true
	switch {
	case x.st != nil && x.st.LongRunning && code < 300:
		ok = x.appendStarted()
	case x.contentLength == 0 || code == http.StatusNoContent || code == http.StatusNotModified || x.r.Method == http.MethodHead:
		ok = x.appendComplete()
	}
	if !ok {
		for k := range x.w.Header() {
			delete(x.w.Header(), k)
		}
		kubestatus.Write(x.w, http.StatusServiceUnavailable, "ServiceUnavailable",
			"the gateway could not record this request in its audit log, so it withholds the response; try again later")
		return
	}
	x.w.WriteHeader(code)
}

// Write appends the record before the last byte of a response of known length goes out.
func (x *exchange) Write(p []byte) (int, error) {
	if x.code == 0 {
		x.WriteHeader(http.StatusOK)
	}
	if x.failed {
		return 0, errNotRecorded
	}
	if x.policyRule().Level.AtLeast(event.LevelRequestResponse) && !x.started {
		x.resBody = x.keep(x.resBody, p)
	}
	if x.meta.on {
		x.scanMeta(p)
	}
	if x.status != nil && len(x.status) < maxStatusBody {
		x.status = append(x.status, p[:min(len(p), maxStatusBody-len(x.status))]...)
	}
	if !x.recorded && x.contentLength > 0 && x.bytesOut.Load()+int64(len(p)) >= x.contentLength {
		x.bytesOut.Add(int64(len(p)))
		if !x.appendComplete() {
			return 0, errNotRecorded
		}
		n, err := x.w.Write(p)
		x.bytesOut.Add(int64(n - len(p)))
		return n, err
	}
	n, err := x.w.Write(p)
	x.bytesOut.Add(int64(n))
	return n, err
}

// Flush passes flushes on (watch events must reach the client one by one).
func (x *exchange) Flush() { _ = http.NewResponseController(x.w).Flush() }

// Unwrap lets http.ResponseController reach the server's writer.
func (x *exchange) Unwrap() http.ResponseWriter { return x.w }

// Hijack is how an upgrade (exec, attach, port-forward) takes the connection once the API
// server agreed to switch protocols: the started record is appended before the 101 goes out.
// If it cannot be, the hijack fails and the client gets an error instead of a stream.
func (x *exchange) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if x.code == 0 {
		x.code = http.StatusSwitchingProtocols
		x.ev.Latency = x.c.cfg.Now().Sub(x.start)
		if !x.appendStarted() {
			return nil, nil, errNotRecorded
		}
	}
	conn, brw, err := http.NewResponseController(x.w).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &countingConn{Conn: conn, x: x}, brw, nil
}

// finish appends what is still owed once the handler returned: the ended record of a stream,
// or the complete record of a response whose end the client has not seen yet (chunked, or no
// body written through us; net/http sends an empty 200 when nothing was written). If that
// fails, the response is aborted instead of completed.
func (x *exchange) finish() {
	if !x.settle(http.StatusOK) {
		panic(http.ErrAbortHandler)
	}
}

// settle appends what is still owed, with code as the status when none was written, and
// reports whether it went in.
func (x *exchange) settle(code int) bool {
	x.finished = true
	switch {
	case x.started:
		return x.appendEnded()
	case !x.recorded:
		if x.code == 0 {
			x.code = code
			x.ev.Latency = x.c.cfg.Now().Sub(x.start)
		}
		return x.appendComplete()
	}
	return true
}

// appendComplete appends the single record of an ordinary request.
func (x *exchange) appendComplete() bool {
	x.recorded = true
	rule := x.policyRule()
	if rule.Level == event.LevelNone || rule.Omits(event.StageComplete) {
		return true
	}
	e := &x.ev
	e.Stage = event.StageComplete
	if x.meta.on {
		x.scanMeta(nil) // the response ended: what it held is all there is
	}
	x.fillOutcome(rule, true)
	return x.appendEvent(e)
}

// appendStarted appends the started record of a long-running request.
func (x *exchange) appendStarted() bool {
	x.recorded, x.started = true, true
	rule := x.policyRule()
	if rule.Level == event.LevelNone || rule.Omits(event.StageStarted) {
		return true
	}
	e := x.ev // a copy: the ended record reuses x.ev
	e.Stage = event.StageStarted
	x.fillOutcomeOf(&e, rule, false)
	return x.appendEvent(&e)
}

// appendEnded appends the ended record of a long-running request and reports whether it
// went in. The handler has returned but the client has not seen the stream's end yet (the
// last chunk, or HTTP/2's END_STREAM, is sent after it): on a failure finish aborts the
// stream, so a watch the client saw end cleanly always has its ended record. A hijacked
// stream (exec, port-forward) is over already; its failure can only be counted and logged.
func (x *exchange) appendEnded() bool {
	rule := x.policyRule()
	if rule.Level == event.LevelNone || rule.Omits(event.StageEnded) {
		return true
	}
	e := &x.ev
	e.Stage = event.StageEnded
	e.Duration = x.c.cfg.Now().Sub(x.start)
	x.fillOutcome(rule, false)
	if !x.appendEvent(e) {
		x.c.cfg.Logger.ErrorContext(x.r.Context(), "audit record of a finished stream not written; the stream is cut off instead of ended",
			"request_id", e.RequestID)
		return false
	}
	return true
}

func (x *exchange) fillOutcome(rule event.Rule, withResponse bool) {
	x.fillOutcomeOf(&x.ev, rule, withResponse)
}

func (x *exchange) fillOutcomeOf(e *event.Event, rule event.Rule, withResponse bool) {
	e.EventID = event.NewID()
	e.SetIdentity(x.identity())
	if x.st != nil {
		e.ImpersonatedUser, e.ImpersonatedGroups = x.st.ImpersonatedUser, x.st.ImpersonatedGroups
		e.GrantIDs = x.st.GrantIDs
	}
	setOutcome(e, x.code, x.st)
	x.noteAdmission(e, withResponse)
	e.Level = rule.Level
	e.BytesIn, e.BytesOut = x.bytesIn.Load(), x.bytesOut.Load()
	var res []byte
	if withResponse {
		res = x.resBody
	}
	x.reqMu.Lock()
	x.c.cfg.Redactor.Capture(e, x.reqBody, x.r.Header.Get("Content-Type"), res, x.w.Header().Get("Content-Type"))
	x.reqMu.Unlock()
}

func (x *exchange) appendEvent(e *event.Event) bool {
	if err := x.c.append(e); err != nil {
		x.failed = true
		return false
	}
	return true
}

// countingBody counts the request body as the proxy reads it, and keeps a copy when the
// audit level records it.
type countingBody struct {
	io.ReadCloser
	x *exchange
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.x.bytesIn.Add(int64(n))
		if b.x.policyRule().Level.AtLeast(event.LevelRequest) {
			b.x.reqMu.Lock()
			b.x.reqBody = b.x.keep(b.x.reqBody, p[:n])
			b.x.reqMu.Unlock()
		}
	}
	return n, err
}

// countingConn counts the bytes of a hijacked stream both ways.
type countingConn struct {
	net.Conn
	x *exchange
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.x.bytesIn.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.x.bytesOut.Add(int64(n))
	return n, err
}
