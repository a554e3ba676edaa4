package detect

// massDelete counts deletes per user in buckets against the user's own busiest bucket: a
// cleanup job deletes hundreds every night, a person who suddenly deletes dozens of objects
// is either cleaning up or destroying.
func (c Config) massDelete() Detection {
	return Detection{
		Name:  "mass-delete",
		Title: "Mass deletes",
		Description: "One user made at least MinDeletes delete or deletecollection requests in a bucket (Bucket, 5 " +
			"minutes by default), and at least BurstFactor times their own busiest bucket in History. Critical when " +
			"events (the cluster's own record) are among the deleted.",
		Severity:  High,
		Technique: &Technique{ID: "T1485", Name: "Data Destruction"},
		Query: func(w Window) (string, map[string]string) {
			return c.sql(burst{
				subject: "user",
				filter:  "kind = 'request' AND verb IN ('delete', 'deletecollection') AND user != ''",
				summary: `concat(subject, ' made ', toString(count()), ' delete request(s) (', toString(countIf(decision = 'allow')),
        ' allowed), up to ', toString(max(n)), ' per ', toString({bucket:UInt32}), ' s (own busiest bucket before: ',
        toString(any(peak)), '): ', arrayStringConcat(arraySort(groupUniqArray(5)(
            concat(resource, if(namespace != '', concat(' in ', namespace), '')))), ', '))`,
				severity: "if(countIf(resource = 'events') > 0, 'critical', '')",
			}.query()), c.params(w, "bucket", itoa(int(c.Bucket.Seconds())), "min", itoa(c.MinDeletes), "factor", itoa(c.BurstFactor))
		},
	}
}
