package apiserver

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
)

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func TestGRPCLoginWhoAmILogout(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	client := kaccessv1.NewAuthServiceClient(ts.grpcConn(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	login, err := client.Login(ctx, &kaccessv1.LoginRequest{Source: "corp", Username: "alice", Password: alicePassword})
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	if login.GetToken() == "" || login.GetSessionId() == "" {
		t.Fatalf("Login returned no token or session id: %v", login)
	}
	if got := ts.logins.snapshot(); !maps.Equal(got, map[string]int{"corp/success": 1}) {
		t.Errorf("OnLogin counts %v, want one success of corp", got)
	}
	if exp := login.GetExpireTime().AsTime(); exp.Before(time.Now().Add(59*time.Minute)) || exp.After(time.Now().Add(61*time.Minute)) {
		t.Errorf("expire_time = %v, want about an hour from now", exp)
	}
	wantID := &kaccessv1.Identity{User: "alice", Uid: "0b1c-alice", Groups: []string{"ad:k8s-devs", "ad:engineering"}, Source: "corp"}
	checkIdentity(t, "Login", login.GetIdentity(), wantID)

	who, err := client.WhoAmI(withToken(ctx, login.GetToken()), &kaccessv1.WhoAmIRequest{})
	if err != nil {
		t.Fatalf("WhoAmI: %v", err)
	}
	checkIdentity(t, "WhoAmI", who.GetIdentity(), wantID)
	if !who.GetExpireTime().AsTime().Equal(login.GetExpireTime().AsTime()) || who.GetSessionId() != login.GetSessionId() {
		t.Errorf("WhoAmI expiry/session = %v/%s, want %v/%s", who.GetExpireTime().AsTime(), who.GetSessionId(),
			login.GetExpireTime().AsTime(), login.GetSessionId())
	}

	if _, err := client.Logout(withToken(ctx, login.GetToken()), &kaccessv1.LogoutRequest{}); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	_, err = client.WhoAmI(withToken(ctx, login.GetToken()), &kaccessv1.WhoAmIRequest{})
	wantStatus(t, err, codes.Unauthenticated, "logged out or revoked")

	logs := ts.logs.String()
	if strings.Contains(logs, alicePassword) || strings.Contains(logs, login.GetToken()) {
		t.Fatalf("the password or the token reached the log:\n%s", logs)
	}
	for _, want := range []string{`"msg":"login"`, `"outcome":"success"`, `"session_id":"` + login.GetSessionId() + `"`,
		`"client_address":"127.0.0.1:`, `"msg":"logout"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

func checkIdentity(t *testing.T, what string, got, want *kaccessv1.Identity) {
	t.Helper()
	if got.GetUser() != want.GetUser() || got.GetUid() != want.GetUid() || got.GetSource() != want.GetSource() ||
		!slices.Equal(got.GetGroups(), want.GetGroups()) {
		t.Errorf("%s identity = %v, want %v", what, got, want)
	}
}

func wantStatus(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), msgPart) {
		t.Fatalf("status = %v %q, want %v containing %q", st.Code(), st.Message(), code, msgPart)
	}
}

func TestGRPCLoginFailures(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	client := kaccessv1.NewAuthServiceClient(ts.grpcConn(t))
	tests := []struct {
		name      string
		req       *kaccessv1.LoginRequest
		code      codes.Code
		msg       string
		badFields []string
	}{
		{name: "wrong password", req: &kaccessv1.LoginRequest{Source: "corp", Username: "alice", Password: "nope"},
			code: codes.Unauthenticated, msg: "invalid username or password"},
		{name: "unknown user looks the same", req: &kaccessv1.LoginRequest{Source: "corp", Username: "mallory", Password: "x"},
			code: codes.Unauthenticated, msg: "invalid username or password"},
		{name: "disabled", req: &kaccessv1.LoginRequest{Source: "corp", Username: "dave", Password: "pw-dave"},
			code: codes.PermissionDenied, msg: "disabled"},
		{name: "locked", req: &kaccessv1.LoginRequest{Source: "corp", Username: "lou", Password: "pw-lou"},
			code: codes.PermissionDenied, msg: "locked"},
		{name: "directory down", req: &kaccessv1.LoginRequest{Source: "down", Username: "alice", Password: alicePassword},
			code: codes.Unavailable, msg: "directory is unavailable"},
		{name: "rate limited", req: &kaccessv1.LoginRequest{Source: "busy", Username: "alice", Password: alicePassword},
			code: codes.ResourceExhausted, msg: "too many failed login attempts"},
		{name: "unknown source", req: &kaccessv1.LoginRequest{Source: "nosuch", Username: "alice", Password: alicePassword},
			code: codes.InvalidArgument, msg: "source: no login source named", badFields: []string{"source"}},
		{name: "everything missing", req: &kaccessv1.LoginRequest{},
			code: codes.InvalidArgument, msg: "username: required", badFields: []string{"source", "username", "password"}},
		{name: "username too long", req: &kaccessv1.LoginRequest{Source: "corp", Username: strings.Repeat("a", 300), Password: "x"},
			code: codes.InvalidArgument, msg: "username: longer than 256 bytes", badFields: []string{"username"}},
		{name: "control characters", req: &kaccessv1.LoginRequest{Source: "corp", Username: "alice\x00", Password: "x"},
			code: codes.InvalidArgument, msg: "username: must be UTF-8 text", badFields: []string{"username"}},
		{name: "malformed source", req: &kaccessv1.LoginRequest{Source: "Corp/../x", Username: "alice", Password: "x"},
			code: codes.InvalidArgument, msg: "source: must be a login source name", badFields: []string{"source"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := client.Login(ctx, tt.req)
			if resp != nil {
				t.Fatalf("Login succeeded: %v", resp)
			}
			wantStatus(t, err, tt.code, tt.msg)
			if tt.badFields != nil {
				st, _ := status.FromError(err)
				var got []string
				for _, d := range st.Details() {
					if br, ok := d.(*errdetails.BadRequest); ok {
						for _, v := range br.GetFieldViolations() {
							got = append(got, v.GetField())
						}
					}
				}
				if !slices.Equal(got, tt.badFields) {
					t.Errorf("field violations = %v, want %v", got, tt.badFields)
				}
			}
		})
	}
	t.Cleanup(func() {
		// The login metrics count what reached a configured source, by outcome; requests
		// refused before (validation, unknown source) are not login attempts of a source.
		want := map[string]int{"corp/invalid_credentials": 2, "corp/account_disabled": 1, "corp/account_locked": 1,
			"down/directory_unavailable": 1, "busy/rate_limited": 1}
		if got := ts.logins.snapshot(); !maps.Equal(got, want) {
			t.Errorf("OnLogin counts %v, want %v", got, want)
		}
		logs := ts.logs.String()
		if strings.Contains(logs, alicePassword) {
			t.Errorf("the password reached the log:\n%s", logs)
		}
		for _, want := range []string{`"outcome":"invalid_credentials"`, `"outcome":"directory_unavailable"`, `"outcome":"account_locked"`} {
			if !strings.Contains(logs, want) {
				t.Errorf("log lacks %s", want)
			}
		}
	})
}

func TestGRPCAuthenticationRequired(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	client := kaccessv1.NewAuthServiceClient(ts.grpcConn(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err := client.WhoAmI(ctx, &kaccessv1.WhoAmIRequest{})
	wantStatus(t, err, codes.Unauthenticated, "no credential")
	_, err = client.Logout(ctx, &kaccessv1.LogoutRequest{})
	wantStatus(t, err, codes.Unauthenticated, "no credential")
	_, err = client.WhoAmI(withToken(ctx, "not-a-token"), &kaccessv1.WhoAmIRequest{})
	wantStatus(t, err, codes.Unauthenticated, "run `kaccess login`")
	_, err = client.WhoAmI(metadata.AppendToOutgoingContext(ctx, "authorization", "Basic YTpi"), &kaccessv1.WhoAmIRequest{})
	wantStatus(t, err, codes.Unauthenticated, "only \"Bearer <token>\"")
	two := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer a", "authorization", "Bearer b")
	_, err = client.WhoAmI(two, &kaccessv1.WhoAmIRequest{})
	wantStatus(t, err, codes.Unauthenticated, "more than one credential")

	// Tokens are checked by the configured authenticator, whoever minted them (e.g. `gateway token`).
	minted, _, err := ts.sessions.Mint(ctx, sessionClaims("eve"))
	if err != nil {
		t.Fatal(err)
	}
	who, err := client.WhoAmI(withToken(ctx, minted), &kaccessv1.WhoAmIRequest{})
	if err != nil || who.GetIdentity().GetUser() != "eve" || who.GetIdentity().GetSource() != "test" {
		t.Fatalf("WhoAmI with a minted token = %v, %v; want eve from source test", who, err)
	}
}

func TestGRPCListSources(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	client := kaccessv1.NewAuthServiceClient(ts.grpcConn(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	all, err := client.ListSources(ctx, &kaccessv1.ListSourcesRequest{})
	if err != nil {
		t.Fatalf("ListSources (no credential needed): %v", err)
	}
	var got []string
	for _, s := range all.GetSources() {
		got = append(got, s.GetName()+"="+s.GetType())
	}
	if want := []string{"busy=ldap", "corp=activedirectory", "down=ldap"}; !slices.Equal(got, want) || all.GetNextPageToken() != "" {
		t.Fatalf("sources = %v (next %q), want %v", got, all.GetNextPageToken(), want)
	}

	var paged []string
	req := &kaccessv1.ListSourcesRequest{PageSize: 2}
	for range 3 {
		page, err := client.ListSources(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page.GetSources() {
			paged = append(paged, s.GetName())
		}
		if page.GetNextPageToken() == "" {
			break
		}
		req.PageToken = page.GetNextPageToken()
	}
	if want := []string{"busy", "corp", "down"}; !slices.Equal(paged, want) {
		t.Fatalf("paged sources = %v, want %v", paged, want)
	}
	_, err = client.ListSources(ctx, &kaccessv1.ListSourcesRequest{PageToken: "!!"})
	wantStatus(t, err, codes.InvalidArgument, "page_token")
	_, err = client.ListSources(ctx, &kaccessv1.ListSourcesRequest{PageSize: -1})
	wantStatus(t, err, codes.InvalidArgument, "page_size")
}

func TestGRPCReflectionAndHealth(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	conn := ts.grpcConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	var services []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	if !slices.Contains(services, "kaccess.v1.AuthService") || !slices.Contains(services, "grpc.health.v1.Health") {
		t.Fatalf("reflection lists %v", services)
	}
	_ = stream.CloseSend()

	health := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "kaccess.v1.AuthService"} {
		got, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || got.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q = %v, %v; want SERVING", svc, got.GetStatus(), err)
		}
	}
}
