package rbacsync_test

import (
	"slices"
	"testing"

	"github.com/kaccess/kaccess/internal/rbacsync"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// Pure logic: no cluster needed.
func TestPlanForSkipsCreatesInTerminatingNamespaces(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, selectorPolicy)
	blue := map[string]string{"kaccess-test/team": "blue"}
	s := &rbacsync.State{
		Namespaces:  []policy.Namespace{{Name: "live", Labels: blue}, {Name: "going", Labels: blue}},
		Terminating: map[string]bool{"going": true},
	}
	cs, err := rbacsync.PlanFor(p, s)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"create ClusterRole kaccess:cm-reader", "create RoleBinding live/kaccess:blue:cm-reader"}
	if got := actions(cs); !slices.Equal(got, want) {
		t.Errorf("plan %v, want %v", got, want)
	}
}
