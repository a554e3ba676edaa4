// Package detect is the library of anomaly detections over the audit log: named, vetted SQL
// queries over audit_events (and the first-seen rollup audit_first_seen), run over a time
// window, each returning findings with the ids of the events that are their evidence.
//
// Every detection is one SELECT with its values bound as query parameters (never pasted into
// the text), so both audit stores, the embedded chDB one and the ClickHouse server one, run it
// through the same narrow Querier. Baselines come from the data: a user's own history before
// the window (their hours, source IPs, user agents, usual rate of refusals and deletes, the
// secrets and actions they had already used), not from lists of names in the code.
//
// # What the detections read beyond the columns
//
// Elevation grants (grant-out-of-scope) are known from the state-change events of kind
// "grant" that kaccess records when a grant starts. The detection relies on these Extra keys:
//
//	grant_id      the grant's id, as it appears in grant_ids of the requests made under it;
//	              when absent, the grant event's own grant_ids[1] is used
//	namespaces    the namespaces the grant was asked for, comma-separated ("payments,web")
//	cluster_wide  "true" when the grant was asked for cluster-wide (then nothing is out of scope)
//
// A grant event with neither namespaces nor cluster_wide says nothing about its scope and is
// ignored: a missing scope must not turn every use of the grant into a finding.
//
// Bindings to privileged roles (privileged-binding) need the binding's body, recorded at the
// Request or RequestResponse audit level for rbac.authorization.k8s.io (roleRef is read from
// the request body, else from the response body); at Metadata level they cannot be seen.
package detect
