package access

import "testing"

func TestGrantCovers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		clusters  []string
		cluster   string
		isDefault bool
		want      bool
	}{
		{"no clusters: the default one", nil, "a", true, true},
		{"no clusters: not another", nil, "b", false, false},
		{"listed", []string{"a", "b"}, "b", false, true},
		{"not listed", []string{"b"}, "a", false, false},
		{"not listed, even the default", []string{"b"}, "a", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := (Grant{Clusters: tt.clusters}).Covers(tt.cluster, tt.isDefault); got != tt.want {
				t.Errorf("Covers(%q, %v) with %v = %v, want %v", tt.cluster, tt.isDefault, tt.clusters, got, tt.want)
			}
		})
	}
}
