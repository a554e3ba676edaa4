package gateway

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kaccess/kaccess/internal/audit/chdb"
	"github.com/kaccess/kaccess/internal/audit/event"
	"github.com/kaccess/kaccess/internal/config"
	"github.com/kaccess/kaccess/internal/testenv"
)

// storedEvents waits until the store holds events matching keep and returns them once their
// number has stayed the same for a flush or two (the shipper sends in batches).
func storedEvents(t *testing.T, store func() *chdb.Store, want int, keep func(*event.Event) bool) []*event.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got []*event.Event
		if s := store(); s != nil {
			all, err := allEvents(s)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range all {
				if keep(e) {
					got = append(got, e)
				}
			}
		}
		if len(got) >= want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d matching events in the audit store after 30s, want %d", len(got), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A create names its object only in the API server's answer: the record has the name (the
// generated one for generateName) at the default Metadata level of configmaps, whether the
// answer came as JSON (kubectl) or protobuf (client-go), and keeps no body.
func TestCreateRecordsTheNameOfTheObjectCreated(t *testing.T) {
	c := testenv.Shared(t)
	c.MustNamespace(t, "fid-create")
	c.MustGrantRole(t, "fid-create", "fid-cm-writer", []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "create"},
	}}, rbacv1.Subject{Kind: rbacv1.GroupKind, Name: "fid:devs"})
	open, store := embeddedStore(t)
	g := startGateway(t, func(c *config.Config) {
		c.Audit.Batch.FlushInterval = config.Duration(50 * time.Millisecond)
	}, WithAuditStore(open))
	token := g.mint(t, "fid-creator", "fid:devs")

	mustKubectl(t, g.kubeconfig(t, "fid-creator", token), "create", "configmap", "by-kubectl", "-n", "fid-create", "--from-literal=k=v")

	// client-go, with protobuf (its default for built-in kinds) and with JSON; the request ids
	// and answer types of its creates are kept to check what the API server answered.
	var mu sync.Mutex
	answerType := map[string]string{}
	client := func(protobuf bool) kubernetes.Interface {
		cfg := g.restConfig(token)
		cfg.ContentType, cfg.AcceptContentTypes = "application/json", "application/json"
		if protobuf {
			cfg.ContentType = "application/vnd.kubernetes.protobuf"
			cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
		}
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				resp, err := rt.RoundTrip(r)
				if err == nil && r.Method == "POST" {
					mu.Lock()
					answerType[resp.Header.Get("X-Request-Id")] = resp.Header.Get("Content-Type")
					mu.Unlock()
				}
				return resp, err
			})
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	ctx := context.Background()
	cms := client(true).CoreV1().ConfigMaps("fid-create")
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "by-client-go"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	generated, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "generated-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jsonGenerated, err := client(false).CoreV1().ConfigMaps("fid-create").Create(ctx,
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "generated-json-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	protobufAnswers := 0
	for _, ct := range answerType {
		if strings.Contains(ct, "protobuf") {
			protobufAnswers++
		}
	}
	if protobufAnswers != 2 {
		t.Fatalf("answer types of client-go's creates: %v, want two protobuf", answerType)
	}

	evs := storedEvents(t, store, 4, func(e *event.Event) bool {
		return e.Kind == event.KindRequest && e.User == "fid-creator" && e.Verb == "create"
	})
	names := map[string]*event.Event{}
	for _, e := range evs {
		names[e.Name] = e
		if e.Namespace != "fid-create" || e.Resource != "configmaps" || e.ResponseCode != 201 ||
			e.Decision != event.DecisionAllow || e.Level != event.LevelMetadata || e.ResponseBody != nil || e.RequestBody != nil {
			t.Errorf("create event: %+v", e)
		}
	}
	for _, want := range []string{"by-kubectl", "by-client-go", generated.Name, jsonGenerated.Name} {
		if names[want] == nil {
			t.Errorf("no create event named %q; names recorded: %v", want, keys(names))
		}
	}
	if e := names[generated.Name]; e != nil && !strings.Contains(answerType[e.RequestID], "protobuf") {
		t.Errorf("the generateName create was answered as %q, want protobuf", answerType[e.RequestID])
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
