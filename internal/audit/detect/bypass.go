package detect

// gatewayOwn is the Extra key the audit webhook receiver sets on the API server's events of
// the gateway's own identity (webhook.GatewayOwnKey; detect does not import the receiver).
const gatewayOwn = "kaccess.io/gateway-own"

// gatewayBypass: with the API server's own audit events on record (source 'apiserver'), a
// person's request there that the gateway did not forward is someone holding a credential to
// the cluster itself: an old admin kubeconfig, a leaked certificate, a break-glass account.
// Requests through the gateway are the gateway's identity impersonating the user, and are not
// stored from the API server's side at all; the request id check keeps it so even where they
// were.
func (c Config) gatewayBypass() Detection {
	return Detection{
		Name:  "gateway-bypass",
		Title: "Requests that reached the API server around the gateway",
		Description: "A person (not a service account or a system: identity, not the gateway itself) whose requests " +
			"the API server recorded (audit webhook) without the gateway forwarding them. Everyone is meant to come " +
			"through the gateway; a direct credential escapes its authentication, grants and policy. High when it " +
			"changed something. Break-glass use explains it; each should have a reason on record.",
		Severity:  Medium,
		Technique: validAccounts,
		Query: func(w Window) (string, map[string]string) {
			return c.sql(`
WITH
cand AS (
    SELECT cluster, user, source_ip, verb, resource, namespace, time, event_id, request_id
    FROM $events
    WHERE $window AND kind = 'request' AND source = 'apiserver' AND user != '' AND NOT startsWith(user, 'system:')
        AND extra['` + gatewayOwn + `'] != 'true'
),
via AS (
    SELECT DISTINCT request_id FROM $events
    WHERE $window AND kind = 'request' AND source != 'apiserver' AND request_id IN (SELECT request_id FROM cand)
)
SELECT cluster, user AS subject,
    concat(user, ' reached the API server without the gateway: ', toString(count()), ' request(s) from ',
        arrayStringConcat(arraySort(groupUniqArray(3)(if(source_ip != '', source_ip, 'an unknown address'))), ', '), ' (',
        arrayStringConcat(arraySort(groupUniqArray(5)(concat(verb, ' ', resource, if(namespace != '', concat(' in ', namespace), '')))), ', '),
        ')') AS summary,
    if(countIf(verb NOT IN ('get', 'list', 'watch')) > 0, 'high', '') AS severity,
    min(time) AS first_seen, max(time) AS last_seen, count() AS count, $evidence AS event_ids
FROM cand
WHERE request_id NOT IN (SELECT request_id FROM via)
GROUP BY cluster, user
$limit`), c.params(w)
		},
	}
}

// unknownClient: a service account's token works from anywhere. Controllers call from the
// same pods and programs all day, so a known service account seen from a new address or with
// a new client program is its token used elsewhere (a stolen token from a pod or a CI log).
// Service accounts with no history before the window (new deployments) are not judged.
func (c Config) unknownClient() Detection {
	return Detection{
		Name:  "unknown-client",
		Title: "Service account used from a new address or client",
		Description: "A service account made requests from a source IP, or with a client program (the user agent's " +
			"product), it never used in History, on the gateway's record or the API server's. High for a new " +
			"address. A rescheduled pod on a new node address explains some; a token copied out of the cluster " +
			"looks like this too.",
		Severity:  Medium,
		Technique: &Technique{ID: "T1528", Name: "Steal Application Access Token"},
		Query: func(w Window) (string, map[string]string) {
			sa := "startsWith(user, 'system:serviceaccount:')"
			return c.sql(newCombos(newCombosQuery{who: sa, historyWho: sa, phrase: "never used by it before", ipSeverity: "high"})), c.params(w)
		},
	}
}
