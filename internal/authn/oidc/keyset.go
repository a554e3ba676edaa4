package oidc

import (
	"context"
	"strings"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
)

// observedKeySet wraps go-oidc's RemoteKeySet to learn why a signature check failed: go-oidc
// flattens the error into text, and a caller must tell "the provider's keys could not be
// fetched" (idp_unavailable) from "no key matches" (bad_signature).
type observedKeySet struct{ keys *gooidc.RemoteKeySet }

type observationKey struct{}

// observation is filled in by VerifySignature for the verification whose context carries it.
type observation struct {
	called bool // the JWS parsed and reached the key set
	err    error
}

// keysUnavailable reports a failure to fetch the key set: RemoteKeySet returns
// "fetching keys ..." exactly when its refetch (after no cached key matched) failed.
func (o *observation) keysUnavailable() bool {
	return o.err != nil && strings.HasPrefix(o.err.Error(), "fetching keys")
}

func (k *observedKeySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.keys.VerifySignature(ctx, jwt)
	if o, ok := ctx.Value(observationKey{}).(*observation); ok {
		o.called, o.err = true, err
	}
	return payload, err
}
