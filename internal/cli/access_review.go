package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
)

// reviewTimeout bounds a review: it summarizes a month of the audit record.
const reviewTimeout = 2 * time.Minute

func newAccessCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "access",
		Short: "Review the access policy against what people actually used (auditors)",
	}
	cmd.AddCommand(newAccessReviewCommand(s, getStore))
	return cmd
}

func newAccessReviewCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var o accessOptions
	since := "30d"
	cmd := &cobra.Command{
		Use:   "review",
		Short: "Propose a least-privilege policy: the rights nobody used in a window, and the narrower roles",
		Long: `review compares what each binding of the access policy grants its groups with what their
members did in the window, from the audit record, and proposes the narrower policy as a diff.
Nothing that was used is proposed for removal. Wildcard rules are shown with what they were
used as. For members of the auditor groups; the review is itself on the audit record.`,
		Example: `  kaccess access review
  kaccess access review --since 90d -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			window, err := parseSince(since)
			if err != nil {
				return err
			}
			return accessCall(cmd.Context(), getStore, &o, func(ctx context.Context, c kaccessv1.AccessServiceClient) error {
				ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
				defer cancel()
				now := time.Now()
				resp, err := c.ReviewAccess(ctx, &kaccessv1.ReviewAccessRequest{
					StartTime: timestamppb.New(now.Add(-window)), EndTime: timestamppb.New(now),
				})
				if err != nil {
					return err
				}
				if o.output == "json" {
					return printJSON(s.Out, resp)
				}
				return printReview(s.Out, resp)
			})
		},
	}
	o.flags(cmd)
	cmd.Flags().StringVar(&since, "since", since, `the window, back from now: "30d", "12h", "1h30m"`)
	return cmd
}

// parseSince reads Go durations and whole days ("30d"), which is how review windows are said.
func parseSince(v string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("--since %q: want a positive number of days such as 30d, or a duration such as 12h", v)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--since %q: want a positive number of days such as 30d, or a duration such as 12h", v)
	}
	return d, nil
}

func rightText(r *kaccessv1.AccessRight) string {
	g := r.GetApiGroup()
	if g == "" {
		g = "core"
	}
	return r.GetVerb() + " " + g + "/" + r.GetResource()
}

func printReview(out io.Writer, r *kaccessv1.ReviewAccessResponse) error {
	fmt.Fprintf(out, "Least-privilege review of %s to %s\n\n",
		r.GetStartTime().AsTime().UTC().Format(time.RFC3339), r.GetEndTime().AsTime().UTC().Format(time.RFC3339))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BINDING\tROLE\tSCOPE\tREQUESTS\tUSERS\tPROPOSAL")
	for _, b := range r.GetBindings() {
		users := strings.Join(b.GetUsers(), ",")
		if users == "" {
			users = "-"
		}
		var proposal string
		switch {
		case b.GetSkipped() != "":
			proposal = "not reviewed (see below)"
		case b.GetRemove():
			proposal = "remove the binding: no member used it"
		case len(b.GetUnused()) == 0 && len(b.GetWildcards()) == 0:
			proposal = "keep: every right was used"
		default:
			proposal = fmt.Sprintf("remove %d unused rights", len(b.GetUnused()))
			if len(b.GetWildcards()) > 0 {
				proposal += ", narrow wildcards"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", b.GetName(), b.GetRole(), oneLine(b.GetScope(), 40), b.GetRequests(), oneLine(users, 40), proposal)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, b := range r.GetBindings() {
		if b.GetSkipped() != "" {
			fmt.Fprintf(out, "\n%s: %s\n", b.GetName(), b.GetSkipped())
			continue
		}
		if b.GetRemove() || (len(b.GetUnused()) == 0 && len(b.GetWildcards()) == 0) {
			continue
		}
		fmt.Fprintf(out, "\n%s (role %s), used by %s:\n", b.GetName(), b.GetRole(), strings.Join(b.GetUsers(), ", "))
		printRights(out, b.GetUnused(), b.GetWildcards())
	}
	for _, e := range r.GetElevations() {
		switch {
		case e.GetSkipped() != "":
			fmt.Fprintf(out, "\nelevation %s: %s\n", e.GetName(), e.GetSkipped())
		case len(e.GetGrants()) == 0:
			fmt.Fprintf(out, "\nelevation %s (role %s): no grant was used in the window\n", e.GetName(), e.GetRole())
		default:
			fmt.Fprintf(out, "\nelevation %s (role %s), grants %s, used by %s:\n", e.GetName(), e.GetRole(),
				strings.Join(e.GetGrants(), ", "), strings.Join(e.GetUsers(), ", "))
			for _, u := range e.GetUsed() {
				fmt.Fprintf(out, "  used: %s\n", rightText(u))
			}
			printRights(out, e.GetUnused(), e.GetWildcards())
		}
	}
	for _, role := range r.GetRoles() {
		if role.GetKept() != "" {
			fmt.Fprintf(out, "\nrole %s: %s\n", role.GetName(), role.GetKept())
		}
	}
	if r.GetPolicyDiff() == "" {
		_, err := fmt.Fprintln(out, "\nThe policy grants nothing that went unused: no change proposed.")
		return err
	}
	_, err := fmt.Fprintf(out, "\nProposed policy (unified diff; -o json has the whole file):\n%s", r.GetPolicyDiff())
	return err
}

func printRights(out io.Writer, unused []*kaccessv1.AccessRight, wildcards []*kaccessv1.WildcardUse) {
	for _, u := range unused {
		fmt.Fprintf(out, "  unused: %s\n", rightText(u))
	}
	for _, w := range wildcards {
		seen := strings.Join(w.GetSeen(), ", ")
		if seen == "" {
			seen = "nothing"
		}
		fmt.Fprintf(out, "  wildcard: rules[%d].%s \"*\" was used as: %s\n", w.GetRule(), w.GetField(), seen)
	}
}
