package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kaccess/kaccess/internal/rbacsync"
)

var (
	rbacSyncUpDesc = prometheus.NewDesc("kaccess_rbacsync_cluster_up",
		"1 when the last RBAC and guardrail sync pass on the cluster succeeded, 0 when it failed (the cluster is skipped, nothing on it pruned, and retried). Only the replica that leads syncs, so only it has the series.",
		[]string{"cluster"}, nil)
	rbacSyncSuccessDesc = prometheus.NewDesc("kaccess_rbacsync_last_success_timestamp_seconds",
		"Unix time of the last successful sync pass on the cluster.", []string{"cluster"}, nil)
	rbacSyncFailuresDesc = prometheus.NewDesc("kaccess_rbacsync_consecutive_failures",
		"Failed sync passes on the cluster since its last success.", []string{"cluster"}, nil)
)

// rbacSyncCollector reports each cluster's sync from its controller's Status, for the
// clusters this replica has run a pass on.
type rbacSyncCollector struct{ set *rbacsync.Set }

func (c rbacSyncCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- rbacSyncUpDesc
	ch <- rbacSyncSuccessDesc
	ch <- rbacSyncFailuresDesc
}

func (c rbacSyncCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.set.Status() {
		if s.Passes == 0 {
			continue
		}
		up := 1.0
		if s.LastError != nil {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(rbacSyncUpDesc, prometheus.GaugeValue, up, s.Cluster)
		ch <- prometheus.MustNewConstMetric(rbacSyncFailuresDesc, prometheus.GaugeValue, float64(s.Failures), s.Cluster)
		if !s.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(rbacSyncSuccessDesc, prometheus.GaugeValue, float64(s.LastSuccess.Unix()), s.Cluster)
		}
	}
}
