package detect

var validAccounts = &Technique{ID: "T1078", Name: "Valid Accounts"}

// unusualHours learns each user's working hours from their own history: an hour of the day
// is usual when the user was active in it on at least two days (one late evening is not a
// habit). An hour next to a usual one is tolerated, so starting a little early is not news.
// Hours are UTC; a user's habits are as regular in UTC as in their own zone.
func (c Config) unusualHours() Detection {
	return Detection{
		Name:  "unusual-hours",
		Title: "Activity at unusual hours for the user",
		Description: "A user made at least MinUnusualEvents requests at hours of the day (UTC) outside their own " +
			"history: hours in which they were active on at least two days of History, give or take an hour. Users " +
			"with fewer than MinHistoryDays active days are not judged. Stolen credentials used from another time " +
			"zone look like this; so does an on-call night.",
		Severity:  Medium,
		Technique: validAccounts,
		Query: func(w Window) (string, map[string]string) {
			// The window is first counted per (user, hour), a few thousand rows, and only those
			// are compared with the profiles; evidence is gathered for the unusual ones only, by a
			// join with them rather than an IN as well (odd would be computed twice).
			return c.sql(`
WITH
profile AS (
    SELECT user, groupArrayIf(h, days >= 2) AS usual, length(arrayDistinct(arrayFlatten(groupArray(ds)))) AS active_days
    FROM (
        SELECT user, h, count() AS days, groupArray(d) AS ds
        FROM (
            SELECT DISTINCT user, toHour(time) AS h, toDate(time) AS d
            FROM $events
            WHERE $history AND kind = 'request' AND user != ''
        )
        GROUP BY user, h)
    GROUP BY user
    HAVING active_days >= {min_days:UInt32}
),
odd AS (
    SELECT user, h, usual, active_days
    FROM (
        SELECT user, toHour(time) AS h, count() AS n
        FROM $events
        WHERE $window AND kind = 'request' AND user != ''
        GROUP BY user, h
    ) AS hours
    INNER JOIN profile USING user
    WHERE NOT has(usual, h) AND NOT has(usual, (h + 1) % 24) AND NOT has(usual, (h + 23) % 24)
)
SELECT cluster, user AS subject,
    concat(user, ' made ', toString(count()), ' request(s) at ',
        arrayStringConcat(arrayMap(x -> concat(leftPad(toString(x), 2, '0'), ':00'), arraySort(groupUniqArray(h))), ', '),
        ' UTC; their usual hours: ',
        arrayStringConcat(arrayMap(x -> leftPad(toString(x), 2, '0'), arraySort(any(usual))), ' '), ' (', toString(any(active_days)),
        ' active days)') AS summary,
    '' AS severity,
    min(time) AS first_seen, max(time) AS last_seen, count() AS count, $evidence AS event_ids
FROM (
    SELECT cluster, user, toHour(time) AS h, time, event_id
    FROM $events
    WHERE $window AND kind = 'request' AND user != ''
) AS e
INNER JOIN odd USING (user, h)
GROUP BY cluster, user
HAVING count() >= {min_events:UInt32}
$limit`), c.params(w, "min_days", itoa(c.MinHistoryDays), "min_events", itoa(c.MinUnusualEvents))
		},
	}
}

// newSource compares a user's source IPs and user agents with those of their own History.
// Agents are compared by product (the part before the first '/'), so a kubectl upgrade is
// not news but a python client where there was only kubectl is.
func (c Config) newSource() Detection {
	return Detection{
		Name:  "new-source",
		Title: "New source IP or user agent for a user",
		Description: "A user made requests from a source IP, or with a client program (the user agent's product), " +
			"not seen for them in History (28 days by default). Users with fewer than MinHistoryDays active days are " +
			"not judged; service accounts are unknown-client's. Stolen credentials used elsewhere look like this; so " +
			"do travel and new laptops.",
		Severity:  Low,
		Technique: validAccounts,
		Query: func(w Window) (string, map[string]string) {
			return c.sql(newCombos(newCombosQuery{
				who:        "user != ''",
				historyWho: "user != '' AND NOT startsWith(user, 'system:serviceaccount:')",
				having:     "uniqExact(toDate(time)) >= {min_days:UInt32}",
				phrase:     "new for them",
				ipSeverity: "medium",
			})), c.params(w, "min_days", itoa(c.MinHistoryDays))
		},
	}
}

// newCombosQuery is what new-source and unknown-client tell apart: whose requests, whose
// history (and how much of it) counts, the summary's words and a new address's severity.
type newCombosQuery struct {
	who, historyWho, having string
	phrase, ipSeverity      string
}

// newCombos is the query of the (user, source IP, client product) combinations of the window
// that the user's history lacks. The window is reduced to its combinations, a few per user,
// before anything is compared with the history; evidence is then gathered only for the
// combinations with something new (a set lookup per row), not kept for all.
func newCombos(q newCombosQuery) string {
	having := ""
	if q.having != "" {
		having = "\n    HAVING " + q.having
	}
	return `
WITH
old AS (
    SELECT user, groupUniqArray(source_ip) AS ips, groupUniqArray(splitByChar('/', user_agent)[1]) AS agents
    FROM $events
    WHERE $history AND kind = 'request' AND ` + q.historyWho + `
    GROUP BY user` + having + `
),
news AS (
    SELECT user, source_ip, product, NOT has(ips, source_ip) AS new_ip, NOT has(agents, product) AS new_agent
    FROM (
        SELECT DISTINCT user, source_ip, splitByChar('/', user_agent)[1] AS product
        FROM $events
        WHERE $window AND kind = 'request' AND ` + q.who + `
    ) AS combos
    INNER JOIN old USING user
    WHERE (new_ip AND source_ip != '') OR (new_agent AND product != '')
)
SELECT cluster, user AS subject, kv.1 AS attr, kv.2 AS value, concat(attr, ':', value) AS scope,
    concat(user, ' used ', attr, ' ', if(attr = 'user agent', any(user_agent), value), ', ` + q.phrase + `: ',
        toString(count()), ' request(s)') AS summary,
    if(attr = 'source IP', '` + q.ipSeverity + `', '') AS severity,
    min(time) AS first_seen, max(time) AS last_seen, count() AS count, $evidence AS event_ids
FROM (
    SELECT cluster, user, source_ip, splitByChar('/', user_agent)[1] AS product, user_agent, time, event_id
    FROM $events
    WHERE $window AND kind = 'request' AND ` + q.who + `
) AS e
INNER JOIN news USING (user, source_ip, product)
ARRAY JOIN [('source IP', source_ip, new_ip AND source_ip != ''), ('user agent', product, new_agent AND product != '')] AS kv
WHERE kv.3
GROUP BY cluster, user, attr, value
$limit`
}
