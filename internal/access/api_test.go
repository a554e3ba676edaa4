package access_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/client-go/dynamic"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
	"github.com/kaccess/kaccess/internal/access"
	"github.com/kaccess/kaccess/internal/apiserver"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/authn"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
	"github.com/kaccess/kaccess/internal/session"
	"github.com/kaccess/kaccess/internal/testenv"
	"github.com/kaccess/kaccess/internal/tlsutil"
)

const apiPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
  - name: api-reader
    ref: {kind: ClusterRole, name: view}
elevations:
  - name: api
    role: api-reader
    namespaces: [grant-a]
    requesters: ["corp:devs"]
    approvers: ["corp:sre"]
    maxDuration: 2h
`

type apiEnv struct {
	events chan *event.Event
	addr   string
	tls    *tls.Config
	tokens map[string]string // user -> session token
}

// startAPI serves AccessService over a real access.Service on the shared cluster (as the
// gateway's identity), with session tokens for alice (corp:devs), bob (corp:sre) and eve.
func startAPI(t *testing.T) *apiEnv {
	t.Helper()
	c := testenv.Shared(t)
	c.MustNamespace(t, "grant-a")
	dyn, err := dynamic.NewForConfig(c.GatewayConfig())
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load([]byte(apiPolicy))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	events := make(chan *event.Event, 100)
	svc, err := access.NewService(access.ServiceConfig{Client: dyn, Policy: p, Logger: log,
		Recorder: access.RecorderFunc(func(e *event.Event) error { events <- e; return nil })})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := session.NewManager(session.Config{Issuer: "kaccess-test", KeysDir: t.TempDir(), TTL: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, caPEM, err := tlsutil.EnsureSelfSigned(t.TempDir(), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := apiserver.New(apiserver.Config{
		Sessions: mgr, Authenticator: authn.Union{authn.Sessions{Verifier: mgr}}, Logger: log,
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Access: svc,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	env := &apiEnv{events: events, addr: ln.Addr().String(), tls: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, tokens: map[string]string{}}
	for user, groups := range map[string][]string{"alice": {"corp:devs"}, "bob": {"corp:sre"}, "eve": {"corp:other"}} {
		tok, _, err := mgr.Mint(context.Background(), session.Claims{User: user, UID: "u-" + user, Groups: groups, Source: "test"})
		if err != nil {
			t.Fatal(err)
		}
		env.tokens[user] = tok
	}
	return env
}

func (e *apiEnv) client(t *testing.T) kaccessv1.AccessServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(e.tls.Clone())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return kaccessv1.NewAccessServiceClient(conn)
}

// as is a call context carrying user's token.
func (e *apiEnv) as(user string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+e.tokens[user])
}

func TestAccessServiceOverGRPCAndREST(t *testing.T) {
	e := startAPI(t)
	c := e.client(t)
	// The request body cannot name the requester: there is no such field. Who asks is the token.
	created, err := c.CreateAccessRequest(e.as("alice"), &kaccessv1.CreateAccessRequestRequest{
		Elevation: "api", Duration: durationpb.New(30 * time.Minute), Reason: "debug", Ticket: "INC-9"})
	if err != nil {
		t.Fatal(err)
	}
	r := created.GetAccessRequest()
	if r.GetRequester().GetUser() != "alice" || r.GetState() != kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING ||
		r.GetRole() != "ClusterRole view" || r.GetNamespaces()[0] != "grant-a" || r.GetPendingExpireTime() == nil {
		t.Fatalf("created %v", r)
	}
	if ev := <-e.events; ev.Kind != event.KindAccessRequest || ev.User != "alice" || ev.SourceIP != "127.0.0.1" || ev.Extra["action"] != "created" {
		t.Errorf("audit event of the create: %+v", ev)
	}
	_, err = c.CreateAccessRequest(e.as("alice"), &kaccessv1.CreateAccessRequestRequest{Elevation: "api", Duration: durationpb.New(3 * time.Hour)})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "duration: 3h0m0s exceeds") ||
		!strings.Contains(st.Message(), "reason: required") {
		t.Errorf("invalid create: %v", err)
	}
	_, err = c.CreateAccessRequest(e.as("eve"), &kaccessv1.CreateAccessRequestRequest{Elevation: "api", Duration: durationpb.New(time.Hour), Reason: "x"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("create by a non-requester: %v", err)
	}
	if _, err := c.ApproveAccessRequest(e.as("alice"), &kaccessv1.ApproveAccessRequestRequest{Name: r.GetName()}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("self-approval: %v", err)
	}
	if _, err := c.ApproveAccessRequest(e.as("eve"), &kaccessv1.ApproveAccessRequestRequest{Name: r.GetName()}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("approval by a non-approver: %v", err)
	}
	if _, err := c.GetAccessRequest(e.as("eve"), &kaccessv1.GetAccessRequestRequest{Name: r.GetName()}); status.Code(err) != codes.NotFound {
		t.Errorf("get by a stranger: %v", err)
	}
	toReview, err := c.ListAccessRequests(e.as("bob"), &kaccessv1.ListAccessRequestsRequest{Scope: kaccessv1.ListAccessRequestsRequest_SCOPE_TO_REVIEW})
	if err != nil || !containsName(toReview.GetAccessRequests(), r.GetName()) {
		t.Fatalf("bob's review list: %v %v", toReview, err)
	}
	approved, err := c.ApproveAccessRequest(e.as("bob"), &kaccessv1.ApproveAccessRequestRequest{Name: r.GetName(), Comment: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	a := approved.GetAccessRequest()
	if a.GetState() != kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED || a.GetApprovals()[0].GetReviewer() != "bob" ||
		a.GetExpireTime().AsTime().Sub(a.GetApproveTime().AsTime()) != 30*time.Minute {
		t.Fatalf("approved %v", a)
	}
	if _, err := c.DenyAccessRequest(e.as("bob"), &kaccessv1.DenyAccessRequestRequest{Name: r.GetName()}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("deny after approval: %v", err)
	}

	// REST: the same service, the same identity rules.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: e.tls.Clone()}, Timeout: 10 * time.Second}
	var grants struct {
		Grants []struct {
			AccessRequest string `json:"accessRequest"`
			Group         string `json:"group"`
			ExpireTime    string `json:"expireTime"`
		} `json:"grants"`
	}
	restGet(t, hc, "https://"+e.addr+"/v1/grants", e.tokens["alice"], &grants)
	if len(grants.Grants) != 1 || grants.Grants[0].Group != "kaccess:grant:"+r.GetName() || grants.Grants[0].ExpireTime == "" {
		t.Errorf("REST grants %+v", grants)
	}
	var got struct {
		AccessRequest struct {
			State string `json:"state"`
		} `json:"accessRequest"`
	}
	restGet(t, hc, "https://"+e.addr+"/v1/accessrequests/"+r.GetName(), e.tokens["bob"], &got)
	if got.AccessRequest.State != "ACCESS_REQUEST_STATE_APPROVED" {
		t.Errorf("REST get %+v", got)
	}

	if _, err := c.RevokeAccessRequest(e.as("alice"), &kaccessv1.RevokeAccessRequestRequest{Name: r.GetName()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RevokeAccessRequest(e.as("alice"), &kaccessv1.RevokeAccessRequestRequest{Name: r.GetName()}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second revoke: %v", err)
	}
	left, err := c.ListGrants(e.as("alice"), &kaccessv1.ListGrantsRequest{})
	if err != nil || len(left.GetGrants()) != 0 {
		t.Errorf("grants after revoke: %v %v", left, err)
	}
}

func containsName(rs []*kaccessv1.AccessRequest, name string) bool {
	for _, r := range rs {
		if r.GetName() == name {
			return true
		}
	}
	return false
}

func restGet(t *testing.T, c *http.Client, url, token string, into any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
}
