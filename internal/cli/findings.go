package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
)

// findingsPoll is how often --watch asks for changes.
const findingsPoll = 5 * time.Second

func newAuditFindingsCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var o auditOptions
	var state string
	var watch, all bool
	var pageSize int32
	cmd := &cobra.Command{
		Use:   "findings",
		Short: "List the findings of scheduled detections (auditors); --watch follows their changes",
		Example: `  kaccess audit findings --state firing
  kaccess audit findings --filter 'severity = "high" AND subject = "ci-*"'
  kaccess audit findings --watch
  kaccess audit findings ack 3f2a... --reason "INC-42: expected maintenance"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return auditCall(cmd.Context(), getStore, &o, func(ctx context.Context, c kaccessv1.AuditServiceClient, _ kaccessv1.AuthServiceClient) error {
				list := func(ctx context.Context) ([]*kaccessv1.StoredFinding, error) {
					var out []*kaccessv1.StoredFinding
					tok := ""
					for {
						callCtx, cancel := context.WithTimeout(ctx, callTimeout)
						resp, err := c.ListFindings(callCtx, &kaccessv1.ListFindingsRequest{
							Filter: o.filter, State: state, PageSize: pageSize, PageToken: tok,
						})
						cancel()
						if err != nil {
							return nil, err
						}
						out = append(out, resp.GetFindings()...)
						tok = resp.GetNextPageToken()
						if tok == "" || (!all && !watch) {
							return out, nil
						}
					}
				}
				fs, err := list(ctx)
				if err != nil {
					return err
				}
				if !watch {
					return printFindings(s.Out, o.output, fs, true)
				}
				// Watch: print everything once, then each finding whose state or last event
				// changed, until interrupted.
				seen := map[string]string{}
				mark := func(fs []*kaccessv1.StoredFinding) []*kaccessv1.StoredFinding {
					var changed []*kaccessv1.StoredFinding
					for i := len(fs) - 1; i >= 0; i-- { // oldest first
						f := fs[i]
						v := f.GetState() + "/" + f.GetUpdateTime().AsTime().String()
						if seen[f.GetId()] != v {
							seen[f.GetId()] = v
							changed = append(changed, f)
						}
					}
					return changed
				}
				if err := printFindings(s.Out, o.output, mark(fs), true); err != nil {
					return err
				}
				t := time.NewTicker(findingsPoll)
				defer t.Stop()
				for {
					select {
					case <-ctx.Done():
						return nil
					case <-t.C:
					}
					fs, err := list(ctx)
					if err != nil {
						if ctx.Err() != nil {
							return nil
						}
						return err
					}
					if ch := mark(fs); len(ch) > 0 {
						if err := printFindings(s.Out, o.output, ch, false); err != nil {
							return err
						}
					}
				}
			})
		},
	}
	o.flags(cmd, "table", "json")
	cmd.Flags().StringVar(&state, "state", "", "only findings in this state: firing, acknowledged, silenced or resolved")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep following: print findings as they appear or change state")
	cmd.Flags().BoolVar(&all, "all", false, "follow page tokens to the last page")
	cmd.Flags().Int32Var(&pageSize, "page-size", 50, "findings per page (at most 1000)")
	cmd.AddCommand(newAuditFindingsAckCommand(s, getStore))
	return cmd
}

func newAuditFindingsAckCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var o auditOptions
	var reason string
	cmd := &cobra.Command{
		Use:   "ack ID --reason TEXT",
		Short: "Acknowledge a firing finding: its alert ends; who and why go on the audit record",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return fmt.Errorf("--reason is required: say why the finding needs no further alert")
			}
			return auditCall(cmd.Context(), getStore, &o, func(ctx context.Context, c kaccessv1.AuditServiceClient, _ kaccessv1.AuthServiceClient) error {
				callCtx, cancel := context.WithTimeout(ctx, callTimeout)
				defer cancel()
				resp, err := c.AcknowledgeFinding(callCtx, &kaccessv1.AcknowledgeFindingRequest{Id: args[0], Reason: reason})
				if err != nil {
					return err
				}
				if o.output == "json" {
					return printJSON(s.Out, resp)
				}
				f := resp.GetFinding()
				fmt.Fprintf(s.Out, "Finding %s (%s, %s) acknowledged: %s\n", f.GetId(), f.GetDetection(),
					strings.Map(printable, f.GetSubject()), strings.Map(printable, f.GetReason()))
				return nil
			})
		},
	}
	o.flags(cmd, "table", "json")
	cmd.Flags().StringVar(&reason, "reason", "", "why (an incident, a ticket); required")
	return cmd
}

// printFindings writes findings as a table (header when asked) or as JSON lines.
func printFindings(out io.Writer, format string, fs []*kaccessv1.StoredFinding, header bool) error {
	if format == "json" {
		for _, f := range fs {
			b, err := protojson.Marshal(f)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintln(out, string(b)); err != nil {
				return err
			}
		}
		return nil
	}
	if len(fs) == 0 {
		if header {
			fmt.Fprintln(out, "No findings.")
		}
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if header {
		fmt.Fprintln(tw, "ID\tSTATE\tSEVERITY\tDETECTION\tCLUSTER\tSUBJECT\tLAST SEEN\tEVENTS\tSUMMARY")
	}
	for _, f := range fs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", f.GetId(), f.GetState(), f.GetSeverity(), f.GetDetection(),
			orDash(f.GetCluster()), orDash(strings.Map(printable, f.GetSubject())),
			f.GetLastSeenTime().AsTime().Local().Format(time.DateTime), f.GetCount(), strings.Map(printable, f.GetSummary()))
	}
	return tw.Flush()
}
