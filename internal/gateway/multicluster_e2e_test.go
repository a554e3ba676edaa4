package gateway

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

const multiClusterPolicy = `apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
roles:
- name: mc-reader
  rules: [{apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list"]}]
- name: mc-secrets
  rules: [{apiGroups: [""], resources: ["secrets"], verbs: ["get", "list"]}]
bindings:
- name: mc-b-only
  groups: ["corp:mc-b"]
  role: mc-reader
  clusterWide: true
  clusters: [b]
- name: mc-labelled
  groups: ["corp:mc-labelled"]
  role: mc-reader
  namespaceSelector: {matchLabels: {mc-e2e: "yes"}}
elevations:
- name: mc-secrets-b
  role: mc-secrets
  clusterWide: true
  requesters: ["corp:mc-devs"]
  approvers: ["corp:mc-leads"]
  maxDuration: 1m
  clusterSelector: {matchLabels: {tier: second}}
`

// cuttable forwards TCP connections to target until cut, which also ends the open ones: a
// network partition between the gateway and a real API server, healed by heal.
type cuttable struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func newCuttable(t *testing.T, target string) *cuttable {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cuttable{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); c.setCut(true) })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go c.forward(in)
		}
	}()
	return c
}

func (c *cuttable) forward(in net.Conn) {
	c.mu.Lock()
	if c.cut {
		c.mu.Unlock()
		in.Close()
		return
	}
	c.mu.Unlock()
	out, err := net.Dial("tcp", c.target)
	if err != nil {
		in.Close()
		return
	}
	c.mu.Lock()
	c.conns[in], c.conns[out] = true, true
	c.mu.Unlock()
	go func() { _, _ = io.Copy(out, in); out.Close() }()
	_, _ = io.Copy(in, out)
	in.Close()
}

func (c *cuttable) setCut(cut bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = cut
	if cut {
		for conn := range c.conns {
			conn.Close()
		}
		c.conns = map[net.Conn]bool{}
	}
}

// Two real API servers behind one gateway: policy entries land only on the clusters they
// target, a grant on cluster b holds on b only and ends at expiry with the controller down,
// and b cut off during a sync is reported and skipped while a is synced, with nothing on b
// pruned once it is back.
func TestSeveralClusters(t *testing.T) {
	a := testenv.Shared(t)
	ctx := context.Background()
	b, err := testenv.StartCluster(ctx, testenv.ClusterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	link := newCuttable(t, strings.TrimPrefix(b.URL, "https://"))
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(multiClusterPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	twoClusters := func(cfg *config.Config) {
		cfg.StateDir = state
		cfg.Access.PolicyFile = policyFile
		cfg.Clusters = []config.Cluster{
			{Name: "a", Server: a.URL, CAFile: a.CAFile, TokenFile: a.GatewayTokenFile, Labels: map[string]string{"tier": "first"}},
			{Name: "b", Server: "https://" + link.ln.Addr().String(), CAFile: b.CAFile, TokenFile: b.GatewayTokenFile,
				Labels: map[string]string{"tier": "second"}},
		}
	}
	const crbB = "kaccess:mc-b-only:mc-reader"
	crbExists := func(c kubernetes.Interface, name string) bool {
		_, err := c.RbacV1().ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{})
		return err == nil
	}

	g1 := startGateway(t, twoClusters)
	eventually(t, "the binding targeted at b exists on b", 30*time.Second, func() bool { return crbExists(b.AdminClient(), crbB) })
	if crbExists(a.AdminClient(), crbB) {
		t.Fatal("the binding targeted at b exists on a")
	}
	if _, err := a.AdminClient().RbacV1().ClusterRoles().Get(ctx, "kaccess:mc-reader", metav1.GetOptions{}); err != nil {
		t.Fatalf("curated roles are made on every cluster: %v", err)
	}
	if code := codeOf(t, g1, "/clusters/b/api/v1/configmaps", g1.mint(t, "mc-bob", "corp:mc-b")); code != 200 {
		t.Fatalf("the b-only binding through /clusters/b/: %d", code)
	}
	if code := codeOf(t, g1, "/clusters/a/api/v1/configmaps", g1.mint(t, "mc-bob", "corp:mc-b")); code != 403 {
		t.Fatalf("the b-only binding through /clusters/a/: %d", code)
	}

	// A grant whose elevation targets b (by label) holds on b only.
	dev, lead := g1.mint(t, "mc-dev", "corp:mc-devs"), g1.mint(t, "mc-lead", "corp:mc-leads")
	code, out := api(t, g1, "POST", "/v1/accessrequests", dev, map[string]any{"elevation": "mc-secrets-b", "duration": "12s", "reason": "incident 7"})
	if code != 200 {
		t.Fatalf("create request: %d %v", code, out)
	}
	name := out["accessRequest"].(map[string]any)["name"].(string)
	if code, out := api(t, g1, "POST", "/v1/accessrequests/"+name+":approve", lead, map[string]any{}); code != 200 {
		t.Fatalf("approve: %d %v", code, out)
	}
	eventually(t, "the grant lets mc-dev read secrets on b", 15*time.Second, func() bool {
		return codeOf(t, g1, "/clusters/b/api/v1/namespaces/default/secrets", dev) == 200
	})
	for _, path := range []string{"/clusters/a/api/v1/namespaces/default/secrets", "/api/v1/namespaces/default/secrets"} {
		if code := codeOf(t, g1, path, dev); code != 403 {
			t.Fatalf("the grant for b on a (%s): %d", path, code)
		}
	}
	grantSel := metav1.ListOptions{LabelSelector: "kaccess.io/grant=" + name}
	if l, err := a.AdminClient().RbacV1().ClusterRoleBindings().List(ctx, grantSel); err != nil || len(l.Items) != 0 {
		t.Fatalf("grant bindings on a: %v %d", err, len(l.Items))
	}
	if l, err := b.AdminClient().RbacV1().ClusterRoleBindings().List(ctx, grantSel); err != nil || len(l.Items) != 1 {
		t.Fatalf("grant bindings on b: %v %d", err, len(l.Items))
	}

	// The controllers go down (a stuck leader holds the Lease): the grant still ends on time.
	g1.stop()
	leases := a.AdminClient().CoordinationV1().Leases("kaccess-system")
	_ = leases.Delete(ctx, "kaccess-rbacsync", metav1.DeleteOptions{})
	now := metav1.NewMicroTime(time.Now())
	if _, err := leases.Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "kaccess-rbacsync"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("stuck-leader"), LeaseDurationSeconds: ptr.To[int32](3600),
			AcquireTime: &now, RenewTime: &now},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	g2 := startGateway(t, twoClusters)
	eventually(t, "the grant on b ends at expiry with the controller down", 30*time.Second, func() bool {
		return codeOf(t, g2, "/clusters/b/api/v1/namespaces/default/secrets", dev) == 403
	})
	if l, err := b.AdminClient().RbacV1().ClusterRoleBindings().List(ctx, grantSel); err != nil || len(l.Items) != 1 {
		t.Fatalf("the grant binding on b should outlive the grant while the controller is down: %v %d", err, len(l.Items))
	}

	// b is cut off while the policy has something new for both clusters; then the leader
	// returns: a is synced, b is reported and keeps everything.
	link.setCut(true)
	for _, c := range []*testenv.Cluster{a, b} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mc-late", Labels: map[string]string{"mc-e2e": "yes"}}}
		if _, err := c.AdminClient().CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	if err := leases.Delete(ctx, "kaccess-rbacsync", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	const rbLate = "kaccess:mc-labelled:mc-reader"
	rbExists := func(c kubernetes.Interface) bool {
		_, err := c.RbacV1().RoleBindings("mc-late").Get(ctx, rbLate, metav1.GetOptions{})
		return err == nil
	}
	eventually(t, "a is synced while b is cut off", 30*time.Second, func() bool { return rbExists(a.AdminClient()) })
	eventually(t, "b is reported down and a up", 30*time.Second, func() bool {
		m := scrape(t, g2)
		down, seen := m[`kaccess_rbacsync_cluster_up{cluster="b"}`]
		return seen && down == 0 && m[`kaccess_rbacsync_cluster_up{cluster="a"}`] == 1
	})
	if !strings.Contains(g2.logs.String(), `"cluster":"b"`) {
		t.Error("no log line names cluster b")
	}
	if rbExists(b.AdminClient()) || !crbExists(b.AdminClient(), crbB) {
		t.Fatal("b was written to while cut off, or lost its binding")
	}
	if l, err := b.AdminClient().RbacV1().ClusterRoleBindings().List(ctx, grantSel); err != nil || len(l.Items) != 1 {
		t.Fatalf("the expired grant's binding on b cannot be removed while b is cut off: %v %d", err, len(l.Items))
	}

	link.setCut(false)
	eventually(t, "b is synced once it is back", 90*time.Second, func() bool {
		return rbExists(b.AdminClient()) && scrape(t, g2)[`kaccess_rbacsync_cluster_up{cluster="b"}`] == 1
	})
	eventually(t, "the expired grant's binding on b goes once b is back", 90*time.Second, func() bool {
		l, err := b.AdminClient().RbacV1().ClusterRoleBindings().List(ctx, grantSel)
		return err == nil && len(l.Items) == 0
	})
	if !crbExists(b.AdminClient(), crbB) || crbExists(a.AdminClient(), crbB) {
		t.Fatal("after b came back: the b-only binding must be on b, and only there")
	}
	if _, err := b.AdminClient().RbacV1().ClusterRoles().Get(ctx, "kaccess:mc-reader", metav1.GetOptions{}); err != nil {
		t.Fatalf("b lost its curated role: %v", err)
	}
}
