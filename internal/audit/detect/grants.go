package detect

// grantLookback is how long before the window a grant may have started and still be in force
// in it: longer than any grant lasts.
const grantLookback = "30"

// grantOutOfScope: every request of a user with grants in force carries their ids, also the
// requests their ordinary RBAC allows. So a request outside the grants' scope is a finding
// only when the user had never done that (resource, verb, namespace) before the grant
// started: activity the grant made possible, beyond what it was asked for (a grant bound to
// a ClusterRole cluster-wide instead of a namespace, a role broader than it looked).
func (c Config) grantOutOfScope() Detection {
	return Detection{
		Name:  "grant-out-of-scope",
		Title: "Elevation grant used outside the scope it was asked for",
		Description: "An allowed request made under an elevation grant, in a namespace outside the grant's scope " +
			"(Extra namespaces and cluster_wide of the grant event), doing something the user had never done before " +
			"the grant started. The grant's binding gives more than was approved.",
		Severity:  High,
		Technique: &Technique{ID: "T1548", Name: "Abuse Elevation Control Mechanism"},
		Query: func(w Window) (string, map[string]string) {
			return c.sql(`
WITH
grants AS (
    SELECT if(extra['grant_id'] != '', extra['grant_id'], grant_ids[1]) AS gid,
        any(arrayFilter(x -> x != '', splitByChar(',', extra['namespaces']))) AS scope,
        max(extra['cluster_wide'] = 'true') AS cluster_wide, min(time) AS granted_at
    FROM $events
    WHERE time >= {to:DateTime64(6, 'UTC')} - INTERVAL ` + grantLookback + ` DAY AND time < {to:DateTime64(6, 'UTC')}
        AND kind = 'grant' AND (mapContains(extra, 'namespaces') OR mapContains(extra, 'cluster_wide'))
    GROUP BY gid
    HAVING gid != ''
),
used AS (
    SELECT event_id, any(time) AS time, any(cluster) AS cluster, any(user) AS user, any(verb) AS verb,
        any(resource) AS resource, any(namespace) AS namespace, any(name) AS name,
        arraySort(groupArray(gid)) AS gids, arrayDistinct(arrayFlatten(groupArray(scope))) AS scopes,
        max(cluster_wide) AS wide, min(granted_at) AS since
    FROM (
        SELECT event_id, time, cluster, user, verb, resource, namespace, name, gid
        FROM $events
        ARRAY JOIN grant_ids AS gid
        WHERE $window AND kind = 'request' AND decision = 'allow' AND notEmpty(grant_ids) AND user != ''
    ) AS e
    INNER JOIN grants USING gid
    GROUP BY event_id
    HAVING NOT wide AND NOT has(scopes, namespace)
),
first AS (
    SELECT user, resource, verb, namespace, min(first_seen) AS first
    FROM $rollup
    WHERE (user, resource, verb, namespace) IN (SELECT user, resource, verb, namespace FROM used)
    GROUP BY user, resource, verb, namespace
)
SELECT cluster, user AS subject,
    concat(arrayStringConcat(gids, ','), '/', if(namespace = '', '*', namespace)) AS scope,
    concat(user, ' used grant(s) ', arrayStringConcat(gids, ', '), ' (scope: ',
        if(empty(any(scopes)), 'none', arrayStringConcat(any(scopes), ', ')), ') to ',
        arrayStringConcat(arraySort(groupUniqArray(5)(concat(verb, ' ', resource))), ', '), ' in ',
        if(namespace = '', 'cluster scope', namespace), ', which they had not done before the grant') AS summary,
    '' AS severity,
    min(time) AS first_seen, max(time) AS last_seen, count() AS count, $evidence AS event_ids
FROM used
INNER JOIN first USING (user, resource, verb, namespace)
WHERE first >= since
GROUP BY cluster, user, gids, namespace
$limit`), c.params(w)
		},
	}
}
