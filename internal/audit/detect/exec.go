package detect

import "strings"

// execProtected: a shell in a pod of kube-system runs with the credentials and host access of
// the cluster's own components. The namespaces are configured, not learnt: what is protected
// is a policy decision, and one exec into them is already worth a look.
func (c Config) execProtected() Detection {
	return Detection{
		Name:  "exec-protected-namespace",
		Title: "Exec, attach or port-forward into a protected namespace",
		Description: "Someone ran exec, attach or port-forward on a pod in a protected namespace " +
			"(ProtectedNamespaces, by default kube-system, kube-public and kaccess-system). Refused attempts count too, " +
			"at lower severity. Incident response explains some; each should have a reason on record.",
		Severity:  High,
		Technique: &Technique{ID: "T1609", Name: "Container Administration Command"},
		Query: func(w Window) (string, map[string]string) {
			return c.sql(`
SELECT cluster, if(user != '', user, source_ip) AS subject, namespace AS scope,
    concat(subject, ' ran ', toString(uniqExact(if(request_id != '', request_id, event_id))), ' ',
        arrayStringConcat(arraySort(groupUniqArray(subresource)), '/'), ' on pods in ', namespace, ': ',
        arrayStringConcat(arraySort(groupUniqArray(5)(name)), ', '),
        if(countIf(decision IN ('deny', 'refused')) > 0,
            concat(' (', toString(countIf(decision IN ('deny', 'refused'))), ' refused)'), '')) AS summary,
    if(countIf(decision = 'allow') = 0, 'medium', '') AS severity,
    min(time) AS first_seen, max(time) AS last_seen,
    uniqExact(if(request_id != '', request_id, event_id)) AS count, $evidence AS event_ids
FROM $events
WHERE $window AND kind = 'request' AND resource = 'pods' AND subresource IN ('exec', 'attach', 'portforward')
    AND has(splitByChar(',', {protected:String}), namespace)
GROUP BY cluster, subject, namespace
$limit`), c.params(w, "protected", strings.Join(c.ProtectedNamespaces, ","))
		},
	}
}
