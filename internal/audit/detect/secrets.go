package detect

import "strings"

var credentialsTechnique = &Technique{ID: "T1552.007", Name: "Unsecured Credentials: Container API"}

// Secret detections leave out system:apiserver, the API server's own loopback identity (on
// record once its audit webhook is on): it reads every secret at start, by design.

// secretFirstAccess: the rollup already knows, per (user, resource, verb, namespace), when it
// was first seen over the whole retained history, so "first time" costs a lookup in a small
// table instead of a scan of the user's past.
func (c Config) secretFirstAccess() Detection {
	return Detection{
		Name:  "secret-first-access",
		Title: "First access to secrets by an identity",
		Description: "An identity read (get, list or watch) secrets in a namespace for the first time since the " +
			"audit log began (the first-seen rollup outlives event retention), and the API server allowed it. " +
			"Requests the gateway refused never count as reads. Secrets hold credentials; a person " +
			"or service account that starts reading them may be exploring with stolen credentials. New team " +
			"members and new deployments explain it too. " +
			"High severity in protected namespaces or cluster-wide.",
		Severity:  Medium,
		Technique: credentialsTechnique,
		Query: func(w Window) (string, map[string]string) {
			return c.sql(`
WITH first AS (
    SELECT cluster, user, namespace, min(first_seen) AS first
    FROM $rollup
    WHERE resource = 'secrets' AND verb IN ('get', 'list', 'watch') AND user NOT IN ('', 'system:apiserver')
    GROUP BY cluster, user, namespace
    HAVING first >= {from:DateTime64(6, 'UTC')} AND first < {to:DateTime64(6, 'UTC')}
)
SELECT cluster, user AS subject, if(namespace = '', '*', namespace) AS scope,
    concat(user, ' read secrets ', if(namespace = '', 'cluster-wide', concat('in ', namespace)),
        ' for the first time: ', toString(count()), ' request(s), ', toString(countIf(decision = 'allow')), ' allowed',
        if(notEmpty(groupUniqArrayIf(5)(name, name != '')),
            concat(' (', arrayStringConcat(arraySort(groupUniqArrayIf(5)(name, name != '')), ', '), ')'), '')) AS summary,
    if(namespace = '' OR has(splitByChar(',', {protected:String}), namespace), 'high', '') AS severity,
    min(time) AS first_seen, max(time) AS last_seen, count() AS count, $evidence AS event_ids
FROM $events
WHERE $window AND kind = 'request' AND resource = 'secrets' AND verb IN ('get', 'list', 'watch')
    AND decision IN ('allow', 'deny')
    AND (cluster, user, namespace) IN (SELECT cluster, user, namespace FROM first)
GROUP BY cluster, user, namespace
HAVING countIf(decision = 'allow') > 0
$limit`), c.params(w, "protected", strings.Join(c.ProtectedNamespaces, ","))
		},
	}
}

// secretListBurst: listing or watching secrets across many namespaces, or cluster-wide, is
// how credentials are harvested. Controllers do it all day, so each subject is compared with
// its own past: cluster-wide is a finding only for a subject never seen doing it before, many
// namespaces only beyond the subject's own busiest bucket.
func (c Config) secretListBurst() Detection {
	return Detection{
		Name:  "secret-list-burst",
		Title: "Burst of list/watch on secrets",
		Description: "One identity listed or watched secrets cluster-wide for the first time, or across more " +
			"namespaces in one bucket than its own history shows (at least BurstFactor times its busiest bucket, " +
			"and at least MinSecretNamespaces). Harvesting credentials looks like this; a new controller does too.",
		Severity:  High,
		Technique: credentialsTechnique,
		Query: func(w Window) (string, map[string]string) {
			// Passes as in burst.query: cheap candidates, then evidence only for the flagged
			// buckets. The history of secret lists is small, so it is read whole rather than
			// narrowed to the candidates (which would compute cand once more).
			return c.sql(`
WITH
cand AS (
    SELECT cluster, user, intDiv(toUnixTimestamp(time), {bucket:UInt32}) AS b,
        uniqExactIf(namespace, namespace != '') AS ns, countIf(namespace = '') AS cluster_wide
    FROM $events
    WHERE $window AND kind = 'request' AND resource = 'secrets' AND verb IN ('list', 'watch') AND user NOT IN ('', 'system:apiserver')
        AND decision IN ('allow', 'deny')
    GROUP BY cluster, user, b
    HAVING ns >= {min_ns:UInt32} OR cluster_wide > 0
),
hist AS (
    SELECT user, max(ns) AS peak FROM (
        SELECT user, intDiv(toUnixTimestamp(time), {bucket:UInt32}) AS b, uniqExactIf(namespace, namespace != '') AS ns
        FROM $events
        WHERE $history AND kind = 'request' AND resource = 'secrets' AND verb IN ('list', 'watch') AND user NOT IN ('', 'system:apiserver')
        AND decision IN ('allow', 'deny')
        GROUP BY user, b)
    GROUP BY user
),
wide AS (
    SELECT DISTINCT cluster, user FROM $rollup
    WHERE resource = 'secrets' AND verb IN ('list', 'watch') AND namespace = '' AND first_seen < {from:DateTime64(6, 'UTC')}
),
flagged AS (
    SELECT cluster, user, b, ns, cluster_wide, hist.peak AS peak
    FROM cand LEFT JOIN hist USING user
    WHERE (cluster_wide > 0 AND (cluster, user) NOT IN (SELECT cluster, user FROM wide))
        OR ns >= greatest({min_ns:UInt32}, {factor:UInt32} * hist.peak)
)
SELECT cluster, user AS subject,
    concat(user, ' listed or watched secrets in up to ', toString(max(ns)), ' namespaces per bucket',
        if(countIf(namespace = '') > 0, concat(' and cluster-wide ', toString(countIf(namespace = '')), ' time(s)'), ''),
        ' (own busiest bucket before: ', toString(any(peak)), ' namespaces)') AS summary,
    '' AS severity,
    min(time) AS first_seen, max(time) AS last_seen, count() AS count, $evidence AS event_ids
FROM (
    SELECT cluster, user, intDiv(toUnixTimestamp(time), {bucket:UInt32}) AS b, time, event_id, namespace
    FROM $events
    WHERE $window AND kind = 'request' AND resource = 'secrets' AND verb IN ('list', 'watch') AND user NOT IN ('', 'system:apiserver')
        AND decision IN ('allow', 'deny')
) AS e
INNER JOIN flagged USING (cluster, user, b)
GROUP BY cluster, user
$limit`), c.params(w, "bucket", itoa(int(c.Bucket.Seconds())), "min_ns", itoa(c.MinSecretNamespaces),
					"factor", itoa(c.BurstFactor))
		},
	}
}
