package oidc_test

import (
	"os"
	"testing"

	"github.com/kaccess/kaccess/internal/testenv"
)

// One real OpenID provider (zitadel/oidc's example server, bin/oidc-provider) for the binary;
// the unit tests use their own httptest issuers.
func TestMain(m *testing.M) { os.Exit(testenv.Run(m, testenv.WithOIDC())) }
