package detect

import "strings"

// privilegedBinding reads roleRef from the recorded body: the binding's name says nothing
// about what it grants. A refused attempt is reported too, lower: someone tried.
func (c Config) privilegedBinding() Detection {
	return Detection{
		Name:  "privileged-binding",
		Title: "Binding to cluster-admin or another privileged role created",
		Description: "A RoleBinding or ClusterRoleBinding to a privileged ClusterRole (PrivilegedRoles, by default " +
			"cluster-admin, admin and edit) was created or changed. Critical for cluster-admin. Needs request or " +
			"response bodies of rbac.authorization.k8s.io recorded (audit level Request or RequestResponse).",
		Severity:  High,
		Technique: &Technique{ID: "T1098.006", Name: "Account Manipulation: Additional Container Cluster Roles"},
		Query: func(w Window) (string, map[string]string) {
			return c.sql(`
SELECT cluster, if(user != '', user, source_ip) AS subject,
    if(request_body != '', request_body, response_body) AS body,
    JSONExtractString(body, 'roleRef', 'name') AS role,
    concat(subject, if(decision = 'allow', concat(' ', multiIf(verb = 'create', 'created', verb = 'update', 'updated', 'patched'), ' '),
            concat(' tried to ', verb, ' ')),
        if(resource = 'clusterrolebindings', 'ClusterRoleBinding ', concat('RoleBinding ', namespace, '/')), name,
        ' to ClusterRole ', role, ' for ',
        arrayStringConcat(arrayMap(s -> concat(JSONExtractString(s, 'kind'), ' ', JSONExtractString(s, 'name')),
            JSONExtractArrayRaw(body, 'subjects')), ', '),
        if(decision = 'allow', '', ' (refused)')) AS summary,
    multiIf(decision != 'allow', 'medium', role = 'cluster-admin', 'critical', '') AS severity,
    time AS first_seen, time AS last_seen, 1 AS count, [event_id] AS event_ids
FROM $events
WHERE $window AND kind = 'request' AND api_group = 'rbac.authorization.k8s.io'
    AND resource IN ('rolebindings', 'clusterrolebindings') AND verb IN ('create', 'update', 'patch')
    AND JSONExtractString(body, 'roleRef', 'kind') = 'ClusterRole'
    AND has(splitByChar(',', {roles:String}), role)
ORDER BY time
$limit`), c.params(w, "roles", strings.Join(c.PrivilegedRoles, ","))
		},
	}
}

// impersonationRefused: kubectl --as that the cluster refuses is someone trying on identities
// they do not hold; refused attempts at system: identities are the worrying ones.
func (c Config) impersonationRefused() Detection {
	return Detection{
		Name:  "impersonation-refused",
		Title: "Impersonation attempts refused",
		Description: "Requests with an impersonated user (kubectl --as) that were refused. High when the target is " +
			"a system: identity or the system:masters group. A mistyped --as explains one; many are probing.",
		Severity: Medium,
		Query: func(w Window) (string, map[string]string) {
			return c.sql(`
SELECT cluster, if(user != '', user, source_ip) AS subject,
    concat(subject, ' was refused impersonating ', arrayStringConcat(arraySort(groupUniqArray(5)(impersonated_user)), ', '),
        ' ', toString(count()), ' time(s)') AS summary,
    if(countIf(startsWith(impersonated_user, 'system:') OR has(impersonated_groups, 'system:masters')) > 0, 'high', '') AS severity,
    min(time) AS first_seen, max(time) AS last_seen, count() AS count, $evidence AS event_ids
FROM $events
WHERE $window AND kind = 'request' AND impersonated_user != '' AND decision IN ('deny', 'refused')
GROUP BY cluster, subject
$limit`), c.params(w)
		},
	}
}
