package detect

import "strings"

// burst is a detection that counts a subject's events in buckets and flags the buckets that
// hold at least min events and at least factor times the subject's own busiest bucket in the
// history. subject, filter, summary and severity are SQL written here, never from input.
type burst struct {
	subject  string // expression naming the subject of an event
	filter   string // condition selecting the events counted
	summary  string // per finding, over the flagged buckets' events (columns n, peak, b available)
	severity string // per finding; '' keeps the detection's severity
}

// query is three cheap passes instead of one expensive one: the window's buckets are counted
// without evidence and only those above the minimum survive (the baseline can only raise the
// threshold); the history is read only for the subjects of those; and the evidence is
// gathered only for the buckets finally flagged. Keeping evidence for every bucket of every
// subject made this several times slower on 10 million events.
func (b burst) query() string {
	r := strings.NewReplacer("SUBJ", b.subject, "FILTER", b.filter, "SUMMARY", b.summary, "SEVERITY", b.severity)
	return r.Replace(`
WITH
cand AS (
    SELECT cluster, SUBJ AS subject, intDiv(toUnixTimestamp(time), {bucket:UInt32}) AS b, count() AS n
    FROM $events
    WHERE $window AND FILTER
    GROUP BY cluster, subject, b
    HAVING n >= {min:UInt32}
),
hist AS (
    SELECT subject, max(n) AS peak FROM (
        SELECT SUBJ AS subject, intDiv(toUnixTimestamp(time), {bucket:UInt32}) AS b, count() AS n
        FROM $events
        WHERE $history AND FILTER AND SUBJ IN (SELECT subject FROM cand)
        GROUP BY subject, b)
    GROUP BY subject
),
flagged AS (
    SELECT cluster, subject, b, n, hist.peak AS peak
    FROM cand LEFT JOIN hist USING subject
    WHERE n >= {factor:UInt32} * hist.peak
)
SELECT cluster, subject, SUMMARY AS summary, SEVERITY AS severity,
    min(time) AS first_seen, max(time) AS last_seen, count() AS count, $evidence AS event_ids
FROM (
    SELECT cluster, SUBJ AS subject, intDiv(toUnixTimestamp(time), {bucket:UInt32}) AS b,
        time, event_id, verb, resource, namespace, decision
    FROM $events
    WHERE $window AND FILTER
) AS e
INNER JOIN flagged USING (cluster, subject, b)
GROUP BY cluster, subject
$limit`)
}
