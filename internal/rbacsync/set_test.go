package rbacsync_test

import (
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/kaccess/kaccess/internal/rbacsync"
)

// NewSet's checks are pure: the fake client is never called.
func TestNewSetNeedsDistinctClusterNames(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, syncPolicyV1)
	ctl := func(cluster string) *rbacsync.Controller {
		c, err := rbacsync.New(rbacsync.Config{Cluster: cluster, Client: fake.NewClientset(), Policy: p})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name    string
		ctls    []*rbacsync.Controller
		wantErr string
	}{
		{"none", nil, "at least one controller"},
		{"one unnamed", []*rbacsync.Controller{ctl("")}, ""},
		{"two named", []*rbacsync.Controller{ctl("a"), ctl("b")}, ""},
		{"one of two unnamed", []*rbacsync.Controller{ctl("a"), ctl("")}, "needs Config.Cluster"},
		{"same name twice", []*rbacsync.Controller{ctl("a"), ctl("a")}, "two controllers of a Set sync cluster a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := rbacsync.NewSet(tt.ctls...)
			if tt.wantErr == "" {
				if err != nil || len(s.Status()) != len(tt.ctls) {
					t.Fatalf("NewSet: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewSet error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
