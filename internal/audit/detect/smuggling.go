package detect

// identitySmuggling: no client has a reason to send Impersonate-* without --as, X-Remote-*,
// a second Authorization or a Connection header naming one of them. The gateway refuses them
// all, so nothing reached the cluster, but whoever sent them was trying to become someone
// else, and a security team wants to know who and from where.
func (c Config) identitySmuggling() Detection {
	return Detection{
		Name:  "identity-smuggling",
		Title: "Identity headers smuggled into requests",
		Description: "Requests the gateway refused because they carried client identity headers: Impersonate-* " +
			"that kubectl --as does not send, X-Remote-* (the API server's front-proxy headers), a second " +
			"Authorization, or a Connection header naming one of them (a hop-by-hop trick). Grouped by subject " +
			"and source address, with the header names (never their values) as evidence. Nothing reached the " +
			"API server, but no ordinary client sends these: someone is trying to act as another identity.",
		Severity:  High,
		Technique: &Technique{ID: "T1134", Name: "Access Token Manipulation"},
		Query: func(w Window) (string, map[string]string) {
			return c.sql(`
SELECT cluster, if(user != '', user, source_ip) AS subject, source_ip AS scope,
    concat(subject, ' sent ', toString(count()), ' request(s) with identity headers the gateway refused, from ',
        if(source_ip != '', source_ip, 'an unknown address'), ': ',
        arrayStringConcat(arraySort(arrayDistinct(arrayFilter(x -> x != '',
            arrayFlatten(groupArray(splitByChar(',', extra['refused_headers'])))))), ', '),
        ' (', arrayStringConcat(arraySort(groupUniqArray(5)(concat(verb, ' ', resource,
            if(namespace != '', concat(' in ', namespace), '')))), ', '), ')') AS summary,
    '' AS severity,
    min(time) AS first_seen, max(time) AS last_seen, count() AS count, $evidence AS event_ids
FROM $events
WHERE $window AND kind = 'request' AND decision = 'refused' AND refusal_reason = 'identity_header'
GROUP BY cluster, user, source_ip
$limit`), c.params(w)
		},
	}
}
