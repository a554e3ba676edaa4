package detect

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/testenv"
)

// The benchmark's data set: KACCESS_BENCH_DETECT_EVENTS events (default 1,000,000) in the
// window day, plus KACCESS_BENCH_DETECT_HISTORY_DAYS days (default 0) before it with
// KACCESS_BENCH_DETECT_HISTORY_EVENTS events each (default: as many as the window day), for the
// detections that read a baseline; without 7 days of history, unusual-hours and new-source
// judge nobody and cost little. The target is under 2 s per detection at 10,000,000 events:
//
//	KACCESS_BENCH_DETECT_EVENTS=10000000 go test -run '^$' -bench Detections -benchtime 3x ./internal/audit/detect/
const (
	benchEventsEnv  = "KACCESS_BENCH_DETECT_EVENTS"
	benchHistoryEnv = "KACCESS_BENCH_DETECT_HISTORY_DAYS"
	benchPerDayEnv  = "KACCESS_BENCH_DETECT_HISTORY_EVENTS"
)

var (
	benchOnce  sync.Once
	benchStore *chdb.Store
	benchErr   error
)

func BenchmarkDetections(b *testing.B) {
	benchData(b)
	ctx := context.Background()
	for _, d := range Library() {
		b.Run(d.Name, func(b *testing.B) {
			var findings int
			start := time.Now()
			for b.Loop() {
				fs, err := RunDetection(ctx, benchStore, d, windowFrom, windowTo)
				if err != nil {
					b.Fatal(err)
				}
				findings = len(fs)
			}
			b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms/detection")
			b.ReportMetric(float64(findings), "findings")
		})
	}
}

// benchData generates the benchmarks' store once per test binary.
func benchData(b *testing.B) {
	n, err := envInt(benchEventsEnv, 1_000_000)
	if err != nil {
		b.Fatal(err)
	}
	days, err := envInt(benchHistoryEnv, 0)
	if err != nil {
		b.Fatal(err)
	}
	perDay, err := envInt(benchPerDayEnv, n)
	if err != nil {
		b.Fatal(err)
	}
	lib, helper := testenv.ChDB(b)
	benchOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		benchStore, benchErr = openStore(ctx, lib, helper)
		if benchErr != nil {
			return
		}
		start := time.Now()
		for d := days; d >= 0; d-- {
			events := perDay
			if d == 0 {
				events = n
			}
			if benchErr = generate(ctx, benchStore, windowFrom.AddDate(0, 0, -d), events, d); benchErr != nil {
				return
			}
		}
		// Merge the parts the inserts left, as a day-old table would be: measuring while
		// background merges compete for the CPUs measures the merges.
		if benchErr = benchStore.Exec(ctx, "OPTIMIZE TABLE kaccess.audit_events FINAL"); benchErr != nil {
			return
		}
		b.Logf("generated %d events in the window and %d a day for %d day(s) before it, merged, in %s",
			n, perDay, days, time.Since(start).Round(time.Millisecond))
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
}

func envInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q: want a whole number", name, v)
	}
	return n, nil
}

// generate inserts n events spread over the day from day inside chDB, from numbers() and
// hash functions: generating 10 million rows in Go and shipping them would take minutes. The
// mix: 2,000 identities (1% service accounts), 50 namespaces, 2% refusals, deletes, secrets
// reads, and rare cases of every detection (exec, impersonation, bindings, grants, anonymous
// 401s) so that no query has an empty table to skip through.
func generate(ctx context.Context, s *chdb.Store, day time.Time, n, salt int) error {
	sql := fmt.Sprintf(`
INSERT INTO kaccess.audit_events (time, event_id, kind, stage, cluster, gateway_instance, seq, request_id, user, source,
    source_ip, user_agent, verb, api_group, api_version, resource, subresource, namespace, name, request_uri, method,
    response_code, decision, impersonated_user, grant_ids, level, request_body, extra)
SELECT
    toDateTime64('%[1]s', 6, 'UTC') + toIntervalMicrosecond(intDiv(number * 86400000000, %[2]d)) AS time,
    concat('ev-%[3]d-', toString(number)) AS event_id,
    if(h %% 200000 = 7, 'grant', 'request') AS kind,
    'complete' AS stage, 'prod-eu-1' AS cluster, 'gw-bench' AS gateway_instance, number AS seq,
    concat('rq-%[3]d-', toString(number)) AS request_id,
    multiIf(h %% 1000 = 1, '', u < 1980, concat('user', toString(u), '@corp.example'),
        concat('system:serviceaccount:ns-', toString(u %% 50), ':sa', toString(u))) AS user,
    'session' AS source,
    concat('10.', toString(u %% 250), '.', toString(intDiv(u, 250)), '.', toString(intDiv(h, 7) %% 3)) AS source_ip,
    ['kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46', 'k9s/v0.32.5', 'helm/v3.16.2', 'Go-http-client/2.0'][1 + u %% 4] AS user_agent,
    ['get', 'get', 'get', 'get', 'list', 'list', 'list', 'watch', 'create', 'update', 'patch', 'delete'][1 + intDiv(h, 11) %% 12] AS verb,
    multiIf(resource IN ('rolebindings', 'clusterrolebindings'), 'rbac.authorization.k8s.io', resource = 'deployments', 'apps', '') AS api_group,
    'v1' AS api_version,
    ['pods', 'pods', 'pods', 'pods', 'deployments', 'deployments', 'services', 'configmaps', 'configmaps', 'secrets',
     'secrets', 'events', 'events', 'nodes', 'endpoints', 'replicasets', 'jobs', 'ingresses', 'rolebindings', 'clusterrolebindings'][1 + intDiv(h, 13) %% 20] AS resource,
    if(resource = 'pods' AND intDiv(h, 17) %% 1000 = 0, ['exec', 'attach', 'portforward', 'log'][1 + intDiv(h, 19) %% 4], '') AS subresource,
    if(resource IN ('nodes', 'clusterrolebindings') OR intDiv(h, 23) %% 100 = 0, '',
        if(intDiv(h, 29) %% 50 = 0, 'kube-system', concat('ns-', toString(intDiv(h, 29) %% 50)))) AS namespace,
    concat(resource, '-', toString(intDiv(h, 31) %% 10000)) AS name,
    concat('/api/v1/', if(namespace != '', concat('namespaces/', namespace, '/'), ''), resource, '/', name) AS request_uri,
    ['GET', 'GET', 'GET', 'GET', 'GET', 'GET', 'GET', 'GET', 'POST', 'PUT', 'PATCH', 'DELETE'][1 + intDiv(h, 11) %% 12] AS method,
    multiIf(user = '', 401, intDiv(h, 37) %% 50 = 0, 403, 200) AS response_code,
    if(response_code IN (401, 403), 'deny', 'allow') AS decision,
    if(intDiv(h, 41) %% 2000 = 0, ['system:admin', 'alice-test'][1 + intDiv(h, 43) %% 2], '') AS impersonated_user,
    if(intDiv(h, 47) %% 100 = 0, [concat('g-', toString(u %% 40))], []) AS grant_ids,
    if(api_group = 'rbac.authorization.k8s.io', 'RequestResponse', 'Metadata') AS level,
    if(api_group = 'rbac.authorization.k8s.io' AND verb = 'create',
        concat('{"roleRef":{"kind":"ClusterRole","name":"', ['view', 'view', 'edit', 'cluster-admin'][1 + intDiv(h, 53) %% 4],
            '"},"subjects":[{"kind":"User","name":"u', toString(u), '"}]}'), '') AS request_body,
    if(kind = 'grant', map('grant_id', concat('g-', toString(u %% 40)), 'namespaces', concat('ns-', toString(u %% 50)), 'cluster_wide', 'false'),
        map()) AS extra
FROM (SELECT number, cityHash64(number, %[3]d) AS h, h %% 2000 AS u FROM numbers(%[2]d))`,
		day.UTC().Format("2006-01-02 15:04:05"), n, salt)
	if err := s.Exec(ctx, sql); err != nil {
		return fmt.Errorf("generate %d events for %s: %w", n, day.Format(time.DateOnly), err)
	}
	return nil
}

// BenchmarkScheduledCost is what scheduled detections cost the store: every detection runs
// once over the default scheduled window (the last hour of the window day) and the CPU time
// of the embedded engine's process (user + system, from /proc) is divided by the default
// interval, giving the share of one core the schedule takes on average:
//
//	go test -run '^$' -bench ScheduledCost -benchtime 1x ./internal/audit/detect/
//	KACCESS_BENCH_DETECT_EVENTS=10000000 go test -run '^$' -bench ScheduledCost -benchtime 1x ./internal/audit/detect/
//
// The events are spread over the day, so the hour holds 1/24 of them; the baselines read the
// whole history before it.
func BenchmarkScheduledCost(b *testing.B) {
	const interval, window = 5 * time.Minute, time.Hour // config.Detections defaults
	benchData(b)
	ctx := context.Background()
	to := windowTo
	from := to.Add(-window)
	var cpu, wall time.Duration
	for b.Loop() {
		cpu, wall = 0, 0
		for _, d := range Library() {
			c0 := helperCPU(b)
			t0 := time.Now()
			if _, err := RunDetection(ctx, benchStore, d, from, to); err != nil {
				b.Fatal(err)
			}
			wall += time.Since(t0)
			dc := helperCPU(b) - c0
			cpu += dc
			b.Logf("%-26s cpu %6.0f ms", d.Name, float64(dc.Microseconds())/1000)
		}
	}
	b.ReportMetric(float64(cpu.Milliseconds()), "cpu-ms/round")
	b.ReportMetric(float64(wall.Milliseconds()), "wall-ms/round")
	b.ReportMetric(100*cpu.Seconds()/interval.Seconds(), "%core@5m")
}

// helperCPU is the user and system CPU time of the engine process of the benchmark's store.
func helperCPU(b *testing.B) time.Duration {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	var ticks int64
	for _, e := range entries {
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.Contains(s[:i], "(kaccess-chdb") {
			continue
		}
		f := strings.Fields(s[i+2:]) // state ppid ... utime(12) stime(13)
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if len(f) < 13 || len(openedDirs) == 0 || !strings.Contains(string(cmd), openedDirs[len(openedDirs)-1]) {
			continue // another store's engine
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + st
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ
}
