package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
)

// apiClient is the gateway's AuthService over gRPC, on the same address kubectl uses.
type apiClient struct {
	conn *grpc.ClientConn
	auth kaccessv1.AuthServiceClient
}

// dial connects to server, trusting caData when given (else the system's roots).
func dial(server string, caData []byte) (*apiClient, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server %q: want the gateway's https:// URL", server)
	}
	tc, err := trusting(caData, "the CA file")
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("dns:///"+u.Host, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, err
	}
	return &apiClient{conn: conn, auth: kaccessv1.NewAuthServiceClient(conn)}, nil
}

// trusting is a TLS client configuration that trusts caData when given, else the system's
// roots; what names the file in the error.
func trusting(caData []byte, what string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caData) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caData) {
			return nil, errors.New(what + " holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

func (c *apiClient) Close() { _ = c.conn.Close() }

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// callTimeout bounds one API call; a directory login may take a while for a user in many groups.
const callTimeout = 30 * time.Second

// explain turns an API error into a sentence for the person at the terminal.
func explain(err error, server string) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		if strings.Contains(st.Message(), "x509:") || strings.Contains(st.Message(), "tls:") {
			return fmt.Errorf("the gateway at %s has a certificate this machine does not trust: pass the gateway's CA with --ca-file (your operator has it)", server)
		}
		if strings.Contains(st.Message(), "connection error") {
			return fmt.Errorf("cannot reach the gateway at %s: is the address right and the gateway running?", server)
		}
		if st.Message() != "" {
			return fmt.Errorf("%s: %s", server, st.Message())
		}
		return fmt.Errorf("cannot reach the gateway at %s (is the address right, and does --ca-file match its certificate?)", server)
	case codes.Unauthenticated:
		return fmt.Errorf("%s", st.Message())
	default:
		return fmt.Errorf("%s", st.Message())
	}
}
