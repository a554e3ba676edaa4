package detect

// guardrailViolations: the API server refused a subject's workloads because an admission
// policy said no (a kaccess guardrail's ValidatingAdmissionPolicy, or Pod Security
// Admission). One refusal is a typo in an image name; several in a window are someone finding
// out which registry, privilege or host access gets through. Capture records the policy's
// name in extra['admission_policy'] from the API server's refusal.
func (c Config) guardrailViolations() Detection {
	return Detection{
		Name:  "guardrail-violation-attempts",
		Title: "Workloads refused by guardrails",
		Description: "One subject had at least MinGuardrailViolations (default 3) requests in the window refused by an " +
			"admission policy: a ValidatingAdmissionPolicy (kaccess guardrails are named kaccess-<guardrail>) or Pod " +
			"Security Admission (recorded as PodSecurity/<level>). Grouped by subject, with the policies and what was " +
			"refused. High when Pod Security refused some (privileged containers, host namespaces or hostPath " +
			"volumes asked for). A new team learning the rules explains some; repeated tries with variations do not.",
		Severity:  Medium,
		Technique: &Technique{ID: "T1610", Name: "Deploy Container"},
		Query: func(w Window) (string, map[string]string) {
			return c.sql(`
SELECT cluster, if(user != '', user, source_ip) AS subject,
    concat(subject, ' had ', toString(count()), ' request(s) refused by admission policies: ',
        arrayStringConcat(arraySort(groupUniqArray(5)(extra['admission_policy'])), ', '), ' (',
        arrayStringConcat(arraySort(groupUniqArray(5)(concat(verb, ' ', resource,
            if(namespace != '', concat(' in ', namespace), '')))), ', '), ')') AS summary,
    if(countIf(startsWith(extra['admission_policy'], 'PodSecurity/')) > 0, 'high', '') AS severity,
    min(time) AS first_seen, max(time) AS last_seen, count() AS count, $evidence AS event_ids
FROM $events
WHERE $window AND kind = 'request' AND decision = 'deny' AND extra['admission_policy'] != ''
GROUP BY cluster, subject
HAVING count() >= {min:UInt32}
$limit`), c.params(w, "min", itoa(c.MinGuardrailViolations))
		},
	}
}
