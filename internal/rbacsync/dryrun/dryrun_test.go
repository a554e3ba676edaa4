package dryrun

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

const testPolicy = `
apiVersion: kaccess.io/v1alpha1
kind: AccessPolicy
guardrails:
  images:
  - name: registries
    mode: deny
    namespaces: [team]
    allowed: ["registry.example.com/", "docker.io/library/nginx"]
  resources:
  - name: limits
    mode: warn
    namespaces: [team]
    limits: [memory]
    requests: []
    maximums: [{namespaces: [team], memory: 1Gi}]
  cel:
  - name: no-latest
    mode: warn
    namespaces: [team]
    expression: 'variables.containers.all(c, !c.image.endsWith(":latest"))'
    message: "pin a version, not :latest"
  hostAccess:
  - name: host
    mode: deny
    namespaces: [team]
  exemptions:
  - guardrails: [registries]
    namespace: team
    workload: legacy
    reason: test
    expires: "2030-01-01T00:00:00Z"
`

func spec(image string, memLimit string) corev1.PodSpec {
	c := corev1.Container{Name: "app", Image: image}
	if memLimit != "" {
		c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(memLimit)}
	}
	return corev1.PodSpec{Containers: []corev1.Container{c}, InitContainers: nil}
}

func hostSpec() corev1.PodSpec {
	s := spec("registry.example.com/agent:1", "64Mi")
	s.HostNetwork, s.HostPID = true, true
	s.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr(true)}
	s.Containers = append(s.Containers, corev1.Container{Name: "sidecar", Image: "registry.example.com/s:1",
		SecurityContext: &corev1.SecurityContext{Privileged: ptr(false)},
		Resources:       corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}}})
	s.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}},
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	return s
}

func ptr[T any](v T) *T { return &v }

func workloads(t *testing.T) []Workload {
	t.Helper()
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: "team"} }
	initBad := spec("registry.example.com/app:1", "64Mi")
	initBad.InitContainers = []corev1.Container{{Name: "init", Image: "quay.io/x/init:1",
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}}}}
	var out []Workload
	for _, x := range []struct {
		res, apiVersion, kind string
		obj                   metav1.Object
	}{
		{"pods", "v1", "Pod", &corev1.Pod{ObjectMeta: meta("ok"), Spec: spec("docker.io/library/nginx:1.27", "64Mi")}},
		{"pods", "v1", "Pod", &corev1.Pod{ObjectMeta: meta("lookalike"), Spec: spec("docker.io/library/nginx-evil:1", "64Mi")}},
		{"deployments", "apps/v1", "Deployment", &appsv1.Deployment{ObjectMeta: meta("web"),
			Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: spec("ghcr.io/x/web:1", "")}}}},
		{"deployments", "apps/v1", "Deployment", &appsv1.Deployment{ObjectMeta: meta("legacy"),
			Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: spec("ghcr.io/x/web:1", "64Mi")}}}},
		{"statefulsets", "apps/v1", "StatefulSet", &appsv1.StatefulSet{ObjectMeta: meta("db"),
			Spec: appsv1.StatefulSetSpec{Template: corev1.PodTemplateSpec{Spec: initBad}}}},
		{"cronjobs", "batch/v1", "CronJob", &batchv1.CronJob{ObjectMeta: meta("nightly"), Spec: batchv1.CronJobSpec{
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: spec("registry.example.com/j:1", "2Gi")}}}}}},
		{"daemonsets", "apps/v1", "DaemonSet", &appsv1.DaemonSet{ObjectMeta: meta("agent"),
			Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: hostSpec()}}}},
		{"jobs", "batch/v1", "Job", &batchv1.Job{ObjectMeta: meta("migrate"),
			Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: spec("registry.example.com/m:latest", "64Mi")}}}},
		{"pods", "v1", "Pod", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere", Namespace: "other"}, Spec: spec("ghcr.io/x:1", "")}},
	} {
		w, err := FromTyped(x.res, x.apiVersion, x.kind, x.obj)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, w)
	}
	return out
}

func TestEvaluate(t *testing.T) {
	p, err := policy.Load([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	nss := []policy.Namespace{{Name: "team", Labels: map[string]string{"kubernetes.io/metadata.name": "team"}},
		{Name: "other", Labels: map[string]string{"kubernetes.io/metadata.name": "other"}}}
	objs, err := policy.DesiredGuardrails(p, nss, time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Evaluate(objs, nss, workloads(t))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, f := range got {
		mode := "warn"
		if f.Refused() {
			mode = "deny"
		}
		lines = append(lines, mode+" "+f.Kind+" "+f.Namespace+"/"+f.Name+": "+f.Message)
	}
	want := []string{
		"deny DaemonSet team/agent: guardrail host: host access not allowed: privileged container app, hostPath volume root, hostNetwork, hostPID",
		"deny StatefulSet team/db: guardrail registries: image(s) quay.io/x/init:1 not from an allowed registry (registry.example.com/, docker.io/library/nginx)",
		"deny Pod team/lookalike: guardrail registries: image(s) docker.io/library/nginx-evil:1 not from an allowed registry (registry.example.com/, docker.io/library/nginx)",
		"warn Job team/migrate: guardrail no-latest: pin a version, not :latest",
		"warn CronJob team/nightly: guardrail limits: in namespace(s) team, each container may request and be limited to at most memory 1Gi",
		"warn Deployment team/web: guardrail limits: container(s) app must set resource limits memory",
		"deny Deployment team/web: guardrail registries: image(s) ghcr.io/x/web:1 not from an allowed registry (registry.example.com/, docker.io/library/nginx)",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}

	// Once the exemption expired, legacy is judged like the others.
	objs, _ = policy.DesiredGuardrails(p, nss, time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC))
	got, _ = Evaluate(objs, nss, workloads(t))
	found := false
	for _, f := range got {
		found = found || f.Name == "legacy"
	}
	if !found {
		t.Error("legacy not reported after its exemption expired")
	}
}
