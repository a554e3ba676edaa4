package detect

// The paths load balancers and probes call without credentials: their 401s are not attempts.
const healthPaths = `match(splitByChar('?', request_uri)[1], '^/(healthz|livez|readyz)(/.*)?$') OR splitByChar('?', request_uri)[1] = '/version'`

// authFailureBurst counts refusals per subject in buckets and compares each bucket with the
// subject's own busiest bucket before the window: a CI job that always hits a few 403s is not
// news, a person who suddenly collects dozens is (credential stuffing, RBAC probing).
func (c Config) authFailureBurst() Detection {
	return Detection{
		Name:  "auth-failure-burst",
		Title: "Burst of 401/403 for one user or source IP",
		Description: "One user (or, without a user, one source IP) got at least MinAuthFailures 401/403 responses in " +
			"a bucket (Bucket, 5 minutes by default), and at least BurstFactor times its own busiest bucket in History. " +
			"Probing permissions or guessing credentials looks like this; so does a broken script.",
		Severity: Medium,
		Query: func(w Window) (string, map[string]string) {
			return c.sql(burst{
				subject: "if(user != '', user, source_ip)",
				filter:  "kind = 'request' AND response_code IN (401, 403)",
				summary: `concat(subject, ' was refused ', toString(count()), ' time(s) in ', toString(uniqExact(b)),
        ' burst(s) of up to ', toString(max(n)), ' per ', toString({bucket:UInt32}), ' s (own busiest bucket before: ',
        toString(any(peak)), '): ', arrayStringConcat(arraySort(groupUniqArray(5)(concat(verb, ' ', resource))), ', '))`,
				severity: "if(max(n) >= 10 * greatest({min:UInt32}, {factor:UInt32} * any(peak)), 'high', '')",
			}.query()), c.params(w, "bucket", itoa(int(c.Bucket.Seconds())), "min", itoa(c.MinAuthFailures), "factor", itoa(c.BurstFactor))
		},
	}
}

// anonymous: the gateway authenticates every request, so a 401 without a user is someone
// without credentials trying the API; health probes are left out by path.
func (c Config) anonymous() Detection {
	return Detection{
		Name:  "anonymous-request",
		Title: "Anonymous or unauthenticated attempts",
		Description: "Requests without an identity refused with 401, or made as system:anonymous, other than the " +
			"health endpoints (/healthz, /livez, /readyz, /version), grouped by source IP. Scanners and " +
			"misconfigured clients; an allowed anonymous request is high severity.",
		Severity: Low,
		Query: func(w Window) (string, map[string]string) {
			return c.sql(`
SELECT cluster, source_ip AS subject,
    concat(if(source_ip != '', source_ip, 'an unknown address'), ' made ', toString(count()),
        ' unauthenticated request(s) to ', toString(uniqExact(splitByChar('?', request_uri)[1])), ' path(s): ',
        arrayStringConcat(arraySort(groupUniqArray(5)(splitByChar('?', request_uri)[1])), ', '),
        if(countIf(decision = 'allow') > 0, concat('; ', toString(countIf(decision = 'allow')), ' allowed'), '')) AS summary,
    multiIf(countIf(decision = 'allow') > 0, 'high', count() >= 20 OR uniqExact(request_uri) >= 5, 'medium', '') AS severity,
    min(time) AS first_seen, max(time) AS last_seen, count() AS count, $evidence AS event_ids
FROM $events
WHERE $window AND kind = 'request'
    AND ((user = '' AND response_code = 401) OR user = 'system:anonymous')
    AND NOT (` + healthPaths + `)
GROUP BY cluster, source_ip
$limit`), c.params(w)
		},
	}
}
