package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/detect"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
	"github.com/kaccess/kaccess/internal/tlsutil"
)

// webhookPolicy is the audit policy deploy/ suggests for the API server.
const webhookPolicy = "../../deploy/kubernetes/apiserver-audit/audit-policy.yaml"

// webhookRig is a kube-apiserver whose audit webhook posts to a gateway, with its log backend
// written in parallel, and that gateway (restartable on the same address, state and store).
type webhookRig struct {
	cluster *testenv.Cluster
	logPath string
	state   string
	addr    string
	token   string
	open    StoreOpener
	store   func() *chdb.Store
}

func newWebhookRig(t *testing.T) *webhookRig {
	t.Helper()
	dir := t.TempDir()
	r := &webhookRig{state: filepath.Join(dir, "gateway"), logPath: filepath.Join(dir, "apiserver-audit.log"),
		token: "webhook-" + strings.Repeat("0123456789", 4)}
	ports := testenv.FreePorts(t, 1)
	r.addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	// The gateway's CA is made before the API server starts, so the webhook kubeconfig can
	// trust it; the gateway finds and keeps it in its state dir.
	_, _, caPEM, err := tlsutil.EnsureSelfSigned(filepath.Join(r.state, "tls"), []string{"localhost", "127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kaccess"] = &clientcmdapi.Cluster{Server: "https://" + r.addr + "/audit-webhook/wh", CertificateAuthorityData: caPEM}
	kc.AuthInfos["apiserver"] = &clientcmdapi.AuthInfo{Token: r.token}
	kc.Contexts["kaccess"] = &clientcmdapi.Context{Cluster: "kaccess", AuthInfo: "apiserver"}
	kc.CurrentContext = "kaccess"
	whConfig := filepath.Join(dir, "audit-webhook.kubeconfig")
	policy, err := filepath.Abs(webhookPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if err := clientcmd.WriteToFile(*kc, whConfig); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "webhook.token"), []byte(r.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r.cluster, err = testenv.StartCluster(ctx, testenv.ClusterConfig{APIServerArgs: []string{
		"--audit-policy-file=" + policy,
		"--audit-webhook-config-file=" + whConfig,
		"--audit-webhook-batch-max-wait=1s",
		// As deploy/ suggests: a failed batch is retried after 30 s, then 1.5 times longer each
		// time (5 tries), which rides out a gateway outage of about four minutes.
		"--audit-webhook-initial-backoff=30s",
		"--audit-log-path=" + r.logPath,
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.cluster.Stop() })
	r.open, r.store = embeddedStore(t)
	return r
}

// startGateway serves a gateway on the rig's address, state dir and store.
func (r *webhookRig) startGateway(t *testing.T) *testGateway {
	t.Helper()
	tokenFile := filepath.Join(filepath.Dir(r.logPath), "webhook.token")
	return startGateway(t, func(cfg *config.Config) {
		cfg.Listen.Address = r.addr
		cfg.StateDir = r.state
		cfg.Clusters = []config.Cluster{{Name: "wh", Server: r.cluster.URL, CAFile: r.cluster.CAFile, TokenFile: r.cluster.GatewayTokenFile}}
		cfg.Audit.Batch.FlushInterval = config.Duration(50 * time.Millisecond)
		cfg.Audit.Webhook.TokenFile = tokenFile
	}, WithAuditStore(r.open))
}

// loggedEvents reads the API server's own log backend: its ResponseComplete and
// ResponseStarted events by audit ID and stage, and who made them.
func (r *webhookRig) loggedEvents(t *testing.T) map[string]apiServerLine {
	t.Helper()
	f, err := os.Open(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]apiServerLine{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var l apiServerLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("API server audit log line: %v", err)
		}
		out[l.AuditID+"/"+l.Stage] = l
	}
	return out
}

type apiServerLine struct {
	AuditID string `json:"auditID"`
	Stage   string `json:"stage"`
	Verb    string `json:"verb"`
	User    struct {
		Username string `json:"username"`
	} `json:"user"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	ObjectRef *struct {
		Resource, Namespace, Name string
	} `json:"objectRef"`
}

// stage maps the API server's stage name to the record's.
func (l apiServerLine) stage() event.Stage {
	if l.Stage == "ResponseStarted" {
		return event.StageStarted
	}
	if l.Verb == "watch" {
		return event.StageEnded
	}
	return event.StageComplete
}

// The API server's own audit events reach the record: a change made directly with an admin
// credential and a change through the gateway both land once; while the gateway is stopped
// for 20 s, the API server's events of that time are not lost, and in the end the store holds
// exactly what the API server's own log backend wrote (less the gateway's impersonated
// requests, which are the gateway's rows); gateway-bypass names the direct admin only.
func TestAPIServerAuditWebhook(t *testing.T) {
	r := newWebhookRig(t)
	ctx := context.Background()
	admin := r.cluster.AdminClient()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "wh"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Explicit rules: the aggregated ClusterRoles are empty without a controller-manager.
	r.cluster.MustGrantRole(t, "wh", "wh-edit", []rbacv1.PolicyRule{readConfigMaps, writeConfigMaps}, testenv.User("wh-alice"))
	start := time.Now()
	g := r.startGateway(t)
	alice := g.mint(t, "wh-alice")

	direct, err := admin.CoreV1().ConfigMaps("wh").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "direct-change"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	viaGateway := g.client(t, alice)
	if _, err := viaGateway.CoreV1().ConfigMaps("wh").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "via-gateway"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The direct change arrives from the API server; the gateway change once, as the gateway's row.
	eventually(t, "the direct admin change is on record from the API server", 30*time.Second, func() bool {
		return len(storedWhere(t, r, fmt.Sprintf("source = 'apiserver' AND user = 'kaccess-admin' AND verb = 'create' AND name = '%s'", direct.Name))) == 1
	})
	eventually(t, "the change through the gateway is on record", 30*time.Second, func() bool {
		return len(storedWhere(t, r, "user = 'wh-alice' AND verb = 'create' AND resource = 'configmaps' AND response_code = 201")) == 1
	})
	if rows := storedWhere(t, r, "source = 'apiserver' AND impersonated_user = 'wh-alice'"); len(rows) != 0 {
		t.Fatalf("the gateway's own request is stored twice (from the API server too): %v", rows)
	}

	// The gateway stops for 20 s (KACCESS_WEBHOOK_OUTAGE to try longer); the API server goes
	// on serving direct changes.
	length := 20 * time.Second
	if v := os.Getenv("KACCESS_WEBHOOK_OUTAGE"); v != "" {
		if length, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	g.stop()
	outage := time.Now()
	var during []string
	for i := 0; time.Since(outage) < length; i++ {
		name := fmt.Sprintf("during-outage-%d", i)
		if _, err := admin.CoreV1().ConfigMaps("wh").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		during = append(during, name)
		time.Sleep(2 * time.Second)
	}
	r.startGateway(t)

	// Everything the API server logged, less the gateway's impersonated requests, is stored
	// exactly once (give its retries time to come in).
	var missing, extra []string
	deadline := time.Now().Add(90*time.Second + length)
	for {
		logged := r.loggedEvents(t)
		stored := map[string]int{}
		for _, e := range storedWhere(t, r, "source = 'apiserver'") {
			stored[e.RequestID+"/"+string(e.Stage)]++
		}
		missing, extra = nil, nil
		for _, l := range logged {
			if l.ImpersonatedUser != nil && l.User.Username == testenv.GatewayUser {
				continue
			}
			key := l.AuditID + "/" + string(l.stage())
			switch n := stored[key]; {
			case n == 0:
				missing = append(missing, fmt.Sprintf("%s %s %s %v", l.Stage, l.User.Username, l.Verb, l.ObjectRef))
			case n > 1:
				extra = append(extra, key)
			}
		}
		if len(missing) == 0 && len(extra) == 0 && len(logged) > 0 {
			t.Logf("%d API server events logged and stored exactly once (%d created during the outage)", len(logged), len(during))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store vs the API server's own log: %d missing, %d stored twice; missing: %s", len(missing), len(extra), strings.Join(first(missing, 20), "; "))
		}
		time.Sleep(time.Second)
	}

	if testing.Verbose() {
		// What the API server said about its webhook (failed batches, retries), for the record.
		if b, err := os.ReadFile(filepath.Join(r.cluster.Dir, "kube-apiserver.log")); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "webhook") || strings.Contains(l, "audit") {
					t.Logf("kube-apiserver: %.300s", l)
				}
			}
		}
	}
	// gateway-bypass names the admin who went around the gateway, and nobody else.
	var bypass detect.Detection
	for _, d := range detect.Library() {
		if d.Name == "gateway-bypass" {
			bypass = d
		}
	}
	fs, err := detect.RunDetection(ctx, r.store(), bypass, start.Add(-time.Minute), time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	subjects := []string{}
	for _, f := range fs {
		subjects = append(subjects, f.Subject)
	}
	if !slices.Equal(subjects, []string{testenv.AdminUser}) {
		t.Fatalf("gateway-bypass names %v, want only %s: %+v", subjects, testenv.AdminUser, fs)
	}
	if fs[0].Severity != detect.High || fs[0].Count < uint64(len(during)) {
		t.Errorf("finding %+v: want high (it changed things) and at least the %d outage changes", fs[0], len(during))
	}
}

// storedWhere returns the stored events matching a SQL condition (the test's own literals);
// nil while the store is not open (a gateway is starting).
func storedWhere(t *testing.T, r *webhookRig, cond string) []*event.Event {
	t.Helper()
	s := r.store()
	if s == nil {
		return nil
	}
	ids, err := s.QueryStrings(context.Background(), "SELECT event_id FROM kaccess.audit_events WHERE "+cond)
	if err != nil {
		t.Logf("store not readable yet: %v", err)
		return nil
	}
	all, err := allEvents(s)
	if err != nil {
		t.Logf("store not readable yet: %v", err)
		return nil
	}
	var out []*event.Event
	for _, e := range all {
		if slices.Contains(ids, e.EventID) {
			out = append(out, e)
		}
	}
	return out
}

func first(s []string, n int) []string { return s[:min(len(s), n)] }
