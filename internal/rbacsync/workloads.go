package rbacsync

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kaccess/kaccess/internal/rbacsync/dryrun"
	"github.com/kaccess/kaccess/internal/rbacsync/policy"
)

// controllerKinds own objects that are judged through their owner instead: a Deployment's
// ReplicaSets and Pods would be refused for the Deployment's template.
var controllerKinds = map[string]bool{
	"ReplicaSet": true, "Deployment": true, "StatefulSet": true, "DaemonSet": true, "Job": true, "CronJob": true,
}

// CheckWorkloads renders the policy's guardrails for the cluster as it is now and evaluates
// their ValidatingAdmissionPolicies against the workloads that run: what each would refuse
// (or warn about) at its next create or update. Objects a workload controller owns are left
// to their owner. A kind that cannot be listed is skipped with a note, not an error: the
// plan of changes stands without it.
func CheckWorkloads(ctx context.Context, client kubernetes.Interface, p *policy.Policy, s *State) ([]dryrun.Finding, []string, error) {
	if p.Guardrails == nil || len(p.Guardrails.Images)+len(p.Guardrails.Resources)+len(p.Guardrails.HostAccess)+len(p.Guardrails.CEL) == 0 {
		return nil, nil, nil
	}
	now := s.Now
	if now.IsZero() {
		now = time.Now()
	}
	objs, err := policy.DesiredGuardrails(p, s.Namespaces, now)
	if err != nil {
		return nil, nil, err
	}
	var workloads []dryrun.Workload
	var notes []string
	add := func(resource, apiVersion, kind string, items []metav1.Object, err error) {
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s not checked against the guardrails: cannot list them: %v", resource, err))
			return
		}
		for _, o := range items {
			if owned(o) {
				continue
			}
			w, err := dryrun.FromTyped(resource, apiVersion, kind, o)
			if err != nil {
				notes = append(notes, err.Error())
				continue
			}
			workloads = append(workloads, w)
		}
	}
	all := metav1.ListOptions{}
	if l, err := client.CoreV1().Pods("").List(ctx, all); err == nil {
		add("pods", "v1", "Pod", objects(l.Items), nil)
	} else {
		add("pods", "", "", nil, err)
	}
	apps := client.AppsV1()
	if l, err := apps.Deployments("").List(ctx, all); err == nil {
		add("deployments", "apps/v1", "Deployment", objects(l.Items), nil)
	} else {
		add("deployments", "", "", nil, err)
	}
	if l, err := apps.StatefulSets("").List(ctx, all); err == nil {
		add("statefulsets", "apps/v1", "StatefulSet", objects(l.Items), nil)
	} else {
		add("statefulsets", "", "", nil, err)
	}
	if l, err := apps.DaemonSets("").List(ctx, all); err == nil {
		add("daemonsets", "apps/v1", "DaemonSet", objects(l.Items), nil)
	} else {
		add("daemonsets", "", "", nil, err)
	}
	if l, err := apps.ReplicaSets("").List(ctx, all); err == nil {
		add("replicasets", "apps/v1", "ReplicaSet", objects(l.Items), nil)
	} else {
		add("replicasets", "", "", nil, err)
	}
	batch := client.BatchV1()
	if l, err := batch.Jobs("").List(ctx, all); err == nil {
		add("jobs", "batch/v1", "Job", objects(l.Items), nil)
	} else {
		add("jobs", "", "", nil, err)
	}
	if l, err := batch.CronJobs("").List(ctx, all); err == nil {
		add("cronjobs", "batch/v1", "CronJob", objects(l.Items), nil)
	} else {
		add("cronjobs", "", "", nil, err)
	}
	if ctx.Err() != nil {
		return nil, notes, ctx.Err()
	}
	findings, err := dryrun.Evaluate(objs, s.Namespaces, workloads)
	return findings, notes, err
}

func owned(o metav1.Object) bool {
	for _, r := range o.GetOwnerReferences() {
		if r.Controller != nil && *r.Controller && controllerKinds[r.Kind] {
			return true
		}
	}
	return false
}

// objects turns a list's items into metav1.Objects (pointers into the slice).
func objects[T any, PT interface {
	*T
	metav1.Object
}](items []T) []metav1.Object {
	out := make([]metav1.Object, len(items))
	for i := range items {
		out[i] = PT(&items[i])
	}
	return out
}
