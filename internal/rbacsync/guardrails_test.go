package rbacsync_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kaccess/kaccess/internal/rbacsync"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
	"github.com/kaccess/kaccess/internal/testenv"
)

// warnings collects the Warning headers the API server sends.
type warnings struct {
	mu   sync.Mutex
	text []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.text = append(w.text, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.text
	w.text = nil
	return out
}

// adminWithWarnings is the admin identity straight to the API server, no gateway in between.
func adminWithWarnings(t *testing.T) (kubernetes.Interface, *warnings) {
	w := &warnings{}
	cfg := testenv.Shared(t).AdminConfig()
	cfg.WarningHandler = w
	return clientFor(t, cfg), w
}

func cleanGuardrails(t *testing.T, namespaces ...string) {
	t.Cleanup(func() {
		ctx := context.Background()
		admin := testenv.Shared(t).AdminClient()
		opts := metav1.ListOptions{LabelSelector: rbacsync.GuardrailSelector}
		errs := []error{
			admin.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().DeleteCollection(ctx, metav1.DeleteOptions{}, opts),
			admin.AdmissionregistrationV1().ValidatingAdmissionPolicies().DeleteCollection(ctx, metav1.DeleteOptions{}, opts),
		}
		for _, ns := range namespaces {
			errs = append(errs, admin.NetworkingV1().NetworkPolicies(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, opts))
		}
		if err := errors.Join(errs...); err != nil {
			t.Errorf("clean guardrail objects: %v", err)
		}
	})
}

// guardedNamespace makes a namespace pods can be created in: there is no controller-manager
// to create its default ServiceAccount.
func guardedNamespace(t *testing.T, name string) {
	t.Helper()
	labelledNamespace(t, name, map[string]string{"kaccess-test/guarded": "true"})
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	_, err := testenv.Shared(t).AdminClient().CoreV1().ServiceAccounts(name).Create(context.Background(), sa, metav1.CreateOptions{})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

type podOpt func(*corev1.PodSpec)

func limited(s *corev1.PodSpec) {
	for i := range s.Containers {
		q := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")}
		s.Containers[i].Resources = corev1.ResourceRequirements{Requests: q, Limits: q.DeepCopy()}
	}
}

// hostAccess asks for the host's network and filesystem: what Pod Security baseline refuses
// (privileged containers are refused even earlier here: kube-apiserver runs without
// --allow-privileged).
func hostAccess(s *corev1.PodSpec) {
	s.HostNetwork = true
	s.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
}

func podSpec(image string, opts ...podOpt) corev1.PodSpec {
	s := corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}}
	for _, o := range opts {
		o(&s)
	}
	return s
}

func pod(ns, name, image string, opts ...podOpt) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: podSpec(image, opts...)}
}

func deployment(ns, name, image string, opts ...podOpt) *appsv1.Deployment {
	l := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: l},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l}, Spec: podSpec(image, opts...)},
		},
	}
}

func cronJob(meta metav1.ObjectMeta, spec corev1.PodSpec) *batchv1.CronJob {
	spec.RestartPolicy = corev1.RestartPolicyNever
	return &batchv1.CronJob{ObjectMeta: meta, Spec: batchv1.CronJobSpec{
		Schedule:    "0 * * * *",
		JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: spec}}},
	}}
}

// refusedBy checks err is the API server's refusal naming want.
func refusedBy(t *testing.T, what string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: created, want it refused by %s", what, want)
		return
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s: error %q, want one naming %s", what, err, want)
	}
}

const guardrailTestPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
guardrails:
  images:
  - name: registries
    mode: deny
    namespaces: [gr-deny]
    allowed: ["registry.example.com/"]
  - name: registries-warn
    mode: warn
    namespaces: [gr-warn]
    allowed: ["registry.example.com/"]
  resources:
  - name: limits
    mode: deny
    namespaces: [gr-deny]
    maximums:
    - namespaces: [gr-deny]
      cpu: "1"
  hostAccess:
  - name: host
    mode: deny
    namespaces: [gr-deny]
  cel:
  - name: no-latest
    mode: deny
    namespaces: [gr-deny]
    expression: 'variables.containers.all(c, !c.image.endsWith(":latest"))'
    message: pin a version, not :latest
  podSecurity:
  - name: baseline
    mode: deny
    level: baseline
    namespaces: [gr-deny]
  networkPolicies:
  - name: isolate
    namespaces: [gr-deny]
    allow:
    - name: web
      podSelector: {matchLabels: {app: web}}
      from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: gr-warn}}}]
      ports: [{port: 8080}]
  exemptions:
  - guardrails: [registries]
    namespace: gr-deny
    workload: legacy
    reason: test
    expires: %q
`

func TestGuardrailsEnforcedByTheAPIServer(t *testing.T) {
	const deny, warn = "gr-deny", "gr-warn"
	guardedNamespace(t, deny)
	guardedNamespace(t, warn)
	cleanManaged(t)
	cleanGuardrails(t, deny, warn)

	expires := time.Now().Add(15 * time.Second).UTC().Truncate(time.Second)
	p := mustPolicy(t, fmt.Sprintf(guardrailTestPolicy, expires.Format(time.RFC3339)))
	c, _ := newController(t, gatewayClient(t), p)
	start(t, c.Run)
	converged(t, p)

	ctx := context.Background()
	admin, warned := adminWithWarnings(t)
	const good = "registry.example.com/app:1"
	// The admission plugin learns of new policies through its own informer: wait until the
	// first refusal shows, then everything else is in place too.
	eventually(t, 10*time.Second, "guardrail policies active", func() error {
		_, err := admin.AppsV1().Deployments(deny).Create(ctx, deployment(deny, "probe", "docker.io/nginx", limited), metav1.CreateOptions{DryRun: []string{"All"}})
		if err == nil {
			return errors.New("a deployment from docker.io was accepted")
		}
		return nil
	})

	// The exemption lets exactly its target through while in force.
	if _, err := admin.AppsV1().Deployments(deny).Create(ctx, deployment(deny, "legacy", "docker.io/nginx", limited), metav1.CreateOptions{}); err != nil {
		t.Errorf("exempt deployment legacy refused: %v", err)
	}
	_, err := admin.AppsV1().Deployments(deny).Create(ctx, deployment(deny, "legacy2", "docker.io/nginx", limited), metav1.CreateOptions{})
	refusedBy(t, "deployment legacy2 (not exempt)", err, "ValidatingAdmissionPolicy 'kaccess-registries'")
	// Pods of the exempt Deployment's ReplicaSets are exempt too; a look-alike name is not.
	rsPod := pod(deny, "legacy-5d4f8c-x2x4z", "docker.io/nginx", limited)
	rsPod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "legacy-5d4f8c", UID: "00000000-0000-0000-0000-000000000001"}}
	if _, err := admin.CoreV1().Pods(deny).Create(ctx, rsPod, metav1.CreateOptions{DryRun: []string{"All"}}); err != nil {
		t.Errorf("pod of the exempt deployment's replicaset refused: %v", err)
	}
	rsPod.OwnerReferences[0].Name = "legacy-evil"
	_, err = admin.CoreV1().Pods(deny).Create(ctx, rsPod, metav1.CreateOptions{DryRun: []string{"All"}})
	refusedBy(t, "pod of replicaset legacy-evil", err, "kaccess-registries")

	// Deny mode: the API server refuses, with the admin's own credentials.
	_, err = admin.AppsV1().Deployments(deny).Create(ctx, deployment(deny, "bad-registry", "docker.io/nginx", limited), metav1.CreateOptions{})
	refusedBy(t, "deployment from docker.io", err, "ValidatingAdmissionPolicy 'kaccess-registries' with binding 'kaccess-registries' denied request: guardrail registries: image(s) docker.io/nginx")
	_, err = admin.CoreV1().Pods(deny).Create(ctx, pod(deny, "no-limits", good), metav1.CreateOptions{})
	refusedBy(t, "pod without limits", err, "ValidatingAdmissionPolicy 'kaccess-limits'")
	_, err = admin.CoreV1().Pods(deny).Create(ctx, pod(deny, "too-big", good, func(s *corev1.PodSpec) {
		limited(s)
		s.Containers[0].Resources.Limits[corev1.ResourceCPU] = resource.MustParse("2")
	}), metav1.CreateOptions{})
	refusedBy(t, "pod over the namespace's cpu maximum", err, "at most cpu 1")
	_, err = admin.CoreV1().Pods(deny).Create(ctx, pod(deny, "host", good, limited, hostAccess), metav1.CreateOptions{})
	refusedBy(t, "pod with hostNetwork and hostPath", err, `violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true), hostPath volumes (volume "root")`)
	_, err = admin.BatchV1().Jobs(deny).Create(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "latest"},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: func() corev1.PodSpec {
			s := podSpec("registry.example.com/app:latest", limited)
			s.RestartPolicy = corev1.RestartPolicyNever
			return s
		}()}}}, metav1.CreateOptions{})
	refusedBy(t, "job with a :latest image (a cel guardrail)", err, "ValidatingAdmissionPolicy 'kaccess-no-latest' with binding 'kaccess-no-latest' denied request: guardrail no-latest: pin a version, not :latest")
	// Pod Security only warns about a template; the hostAccess guardrail refuses the workload.
	_, err = admin.AppsV1().Deployments(deny).Create(ctx, deployment(deny, "host", good, limited, hostAccess), metav1.CreateOptions{})
	refusedBy(t, "deployment with hostNetwork and hostPath", err, "ValidatingAdmissionPolicy 'kaccess-host' with binding 'kaccess-host' denied request: guardrail host: host access not allowed: hostPath volume root, hostNetwork")
	cj := &metav1.ObjectMeta{Name: "nightly", Namespace: deny}
	_, err = admin.BatchV1().CronJobs(deny).Create(ctx, cronJob(*cj, podSpec("docker.io/busybox", limited)), metav1.CreateOptions{})
	refusedBy(t, "cronjob from docker.io", err, "kaccess-registries")

	// Allowed ones pass.
	if _, err := admin.CoreV1().Pods(deny).Create(ctx, pod(deny, "fine", good, limited), metav1.CreateOptions{}); err != nil {
		t.Errorf("allowed pod refused: %v", err)
	}
	if _, err := admin.AppsV1().Deployments(deny).Create(ctx, deployment(deny, "web", good, limited), metav1.CreateOptions{}); err != nil {
		t.Errorf("allowed deployment refused: %v", err)
	}

	// Warn mode: created, with a warning.
	warned.take()
	if _, err := admin.AppsV1().Deployments(warn).Create(ctx, deployment(warn, "warned", "docker.io/nginx"), metav1.CreateOptions{}); err != nil {
		t.Errorf("warn mode refused: %v", err)
	}
	if w := strings.Join(warned.take(), "\n"); !strings.Contains(w, "ValidatingAdmissionPolicy 'kaccess-registries-warn'") ||
		!strings.Contains(w, "docker.io/nginx not from an allowed registry") {
		t.Errorf("warn mode: warnings %q", w)
	}

	// NetworkPolicies present, and repaired after a hand edit.
	nps := admin.NetworkingV1().NetworkPolicies(deny)
	dd, err := nps.Get(ctx, "kaccess-isolate-default-deny", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("default deny: %v", err)
	}
	if len(dd.Spec.Ingress) != 0 || len(dd.Spec.PodSelector.MatchLabels) != 0 {
		t.Errorf("default deny is not: %+v", dd.Spec)
	}
	allow, err := nps.Get(ctx, "kaccess-isolate-allow-web", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("allowed flow: %v", err)
	}
	allow.Spec.Ingress = append(allow.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{}) // allow everything
	if _, err := nps.Update(ctx, allow, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, repairDeadline, "hand-edited NetworkPolicy repaired", func() error {
		got, err := nps.Get(ctx, "kaccess-isolate-allow-web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(got.Spec.Ingress) != 1 || got.Spec.Ingress[0].Ports[0].Port.IntValue() != 8080 {
			return fmt.Errorf("ingress %+v", got.Spec.Ingress)
		}
		return nil
	})
	// The pod-security label taken away by hand comes back.
	nsc := admin.CoreV1().Namespaces()
	if _, err := nsc.Patch(ctx, deny, "application/merge-patch+json",
		[]byte(`{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, repairDeadline, "pod-security label restored", func() error {
		ns, err := nsc.Get(ctx, deny, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ns.Labels["pod-security.kubernetes.io/enforce"] != policy.LevelBaseline {
			return fmt.Errorf("labels %v", ns.Labels)
		}
		return nil
	})

	// After the expiry the controller drops the exemption on its own, without a resync.
	time.Sleep(time.Until(expires))
	eventually(t, 10*time.Second, "exemption expired", func() error {
		d, err := admin.AppsV1().Deployments(deny).Get(ctx, "legacy", metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Template.Labels["rev"] = "2"
		_, err = admin.AppsV1().Deployments(deny).Update(ctx, d, metav1.UpdateOptions{DryRun: []string{"All"}})
		switch {
		case err == nil:
			return errors.New("legacy still passes")
		case !strings.Contains(err.Error(), "kaccess-registries"):
			return fmt.Errorf("unexpected error %v", err)
		}
		return nil
	})
	// Least privilege: the gateway's identity can write what guardrails render, nothing near it.
	for _, tc := range []struct {
		group, resource, verb string
		want                  bool
	}{
		{"admissionregistration.k8s.io", "validatingadmissionpolicies", "create", true},
		{"admissionregistration.k8s.io", "validatingadmissionpolicybindings", "delete", true},
		{"networking.k8s.io", "networkpolicies", "update", true},
		{"", "namespaces", "patch", true},
		{"admissionregistration.k8s.io", "validatingwebhookconfigurations", "create", false},
		{"admissionregistration.k8s.io", "mutatingadmissionpolicies", "create", false},
		{"", "namespaces", "delete", false},
		{"", "pods", "create", false},
		{"apps", "deployments", "list", false},
	} {
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{User: testenv.GatewayUser,
			ResourceAttributes: &authzv1.ResourceAttributes{Group: tc.group, Resource: tc.resource, Verb: tc.verb, Namespace: deny}}}
		res, err := testenv.Shared(t).AdminClient().AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status.Allowed != tc.want {
			t.Errorf("gateway may %s %s.%s: %v, want %v", tc.verb, tc.resource, tc.group, res.Status.Allowed, tc.want)
		}
	}

	pol, err := admin.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, "kaccess-registries", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pol.Spec.MatchConditions) != 0 {
		t.Errorf("expired exemption still rendered: %+v", pol.Spec.MatchConditions)
	}
}
