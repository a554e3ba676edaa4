package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
)

// accessOptions are the flags every access command shares.
type accessOptions struct {
	server, output string
}

func (o *accessOptions) flags(cmd *cobra.Command) {
	serverFlag(cmd, &o.server)
	cmd.Flags().StringVarP(&o.output, "output", "o", "table", "output format: table or json")
}

func (o *accessOptions) check() error {
	if o.output != "table" && o.output != "json" {
		return fmt.Errorf("--output %q: want table or json", o.output)
	}
	return nil
}

// accessCall opens the kept session of o.server and runs f with AccessService and a context
// carrying the session token (no deadline: --wait may take long; each call sets its own).
func accessCall(ctx context.Context, getStore func() (Store, error), o *accessOptions,
	f func(ctx context.Context, c kaccessv1.AccessServiceClient) error) error {
	if err := o.check(); err != nil {
		return err
	}
	return sessionCall(ctx, getStore, o.server, func(ctx context.Context, _ *Session, c *apiClient) error {
		return f(ctx, kaccessv1.NewAccessServiceClient(c.conn))
	})
}

func newRequestCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "request",
		Short: "Ask for a temporary elevation, and approve, deny or revoke requests",
		Long: `Access requests ask for an elevation of the access policy for a while. Approvers of the
elevation decide; once approved, the grant is in force until its expiry, which is fixed at
approval. Who asks and who decides is always the logged-in person.`,
		Example: `  kaccess request create db-admin --for 1h --reason "INC-42: fix the stuck migration" --wait
  kaccess request list --pending
  kaccess request approve db-admin-x7k2p --comment "go ahead"
  kaccess request revoke db-admin-x7k2p`,
	}
	cmd.AddCommand(
		newRequestCreateCommand(s, getStore),
		newRequestListCommand(s, getStore),
		newRequestShowCommand(s, getStore),
		newRequestDecideCommand(s, getStore, "approve", "Approve a pending request (once enough approvers did, it is granted)"),
		newRequestDecideCommand(s, getStore, "deny", "Deny a pending request (one denial is final)"),
		newRequestDecideCommand(s, getStore, "revoke", "End your request, or one you may approve, before it expires"),
	)
	return cmd
}

// defaultPollInterval is how often --wait asks whether a request was decided.
const defaultPollInterval = 2 * time.Second

func newRequestCreateCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var o accessOptions
	var in kaccessv1.CreateAccessRequestRequest
	var dur time.Duration
	var wait bool
	var poll time.Duration
	cmd := &cobra.Command{
		Use:   "create ELEVATION",
		Short: "Ask for an elevation of the access policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dur <= 0 {
				return errors.New("--for is required: how long you need it, such as 1h")
			}
			in.Elevation, in.Duration = args[0], durationpb.New(dur)
			return accessCall(cmd.Context(), getStore, &o, func(ctx context.Context, c kaccessv1.AccessServiceClient) error {
				callCtx, cancel := context.WithTimeout(ctx, callTimeout)
				resp, err := c.CreateAccessRequest(callCtx, &in)
				cancel()
				if err != nil {
					return err
				}
				r := resp.GetAccessRequest()
				if !wait {
					return printRequest(s.Out, o.output, r)
				}
				if o.output == "table" {
					fmt.Fprintf(s.Out, "Request %s is waiting for approval (%d needed); waiting until it is decided...\n",
						r.GetName(), r.GetApprovalsRequired())
				}
				return waitForDecision(ctx, s.Out, o.output, c, r.GetName(), poll)
			})
		},
	}
	o.flags(cmd)
	cmd.Flags().DurationVar(&dur, "for", 0, "how long the grant should last once approved, such as 1h (at most the elevation's maximum)")
	cmd.Flags().StringVar(&in.Reason, "reason", "", "why you need it (most elevations require one)")
	cmd.Flags().StringVar(&in.Ticket, "ticket", "", "a ticket reference, such as INC-1234")
	cmd.Flags().StringSliceVar(&in.Namespaces, "namespace", nil, "only these of the elevation's namespaces (repeat or comma-separate; default all)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the request is approved, denied or expires")
	cmd.Flags().DurationVar(&poll, "poll-interval", defaultPollInterval, "how often --wait asks")
	_ = cmd.Flags().MarkHidden("poll-interval")
	return cmd
}

// waitForDecision polls until request name leaves PENDING. A denied, expired or revoked
// request is an error, so scripts can stop on it.
func waitForDecision(ctx context.Context, out io.Writer, format string, c kaccessv1.AccessServiceClient, name string, poll time.Duration) error {
	if poll <= 0 {
		poll = defaultPollInterval
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := c.GetAccessRequest(callCtx, &kaccessv1.GetAccessRequestRequest{Name: name})
		cancel()
		if err != nil {
			return err
		}
		r := resp.GetAccessRequest()
		switch r.GetState() {
		case kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING:
		case kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED:
			return printRequest(out, format, r)
		default:
			if err := printRequest(out, format, r); err != nil {
				return err
			}
			return fmt.Errorf("access request %s was %s", name, stateName(r.GetState()))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped waiting for %s; it is still pending: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

func newRequestListCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var o accessOptions
	var mine, pending, all bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the requests waiting for your review and your own (or only --mine, only --pending, or --all you may see)",
		Long: `Without flags, list what waits for you: the pending requests of others you may approve and
have not reviewed yet, and your own requests, newest first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &kaccessv1.ListAccessRequestsRequest{Scope: kaccessv1.ListAccessRequestsRequest_SCOPE_MINE_AND_TO_REVIEW}
			set := 0
			for _, f := range []struct {
				on    bool
				scope kaccessv1.ListAccessRequestsRequest_Scope
			}{
				{mine, kaccessv1.ListAccessRequestsRequest_SCOPE_MINE},
				{pending, kaccessv1.ListAccessRequestsRequest_SCOPE_TO_REVIEW},
				{all, kaccessv1.ListAccessRequestsRequest_SCOPE_ALL},
			} {
				if f.on {
					req.Scope = f.scope
					set++
				}
			}
			if set > 1 {
				return errors.New("--mine, --pending and --all exclude each other")
			}
			return accessCall(cmd.Context(), getStore, &o, func(ctx context.Context, c kaccessv1.AccessServiceClient) error {
				list := &kaccessv1.ListAccessRequestsResponse{}
				for {
					callCtx, cancel := context.WithTimeout(ctx, callTimeout)
					page, err := c.ListAccessRequests(callCtx, req)
					cancel()
					if err != nil {
						return err
					}
					list.AccessRequests = append(list.AccessRequests, page.GetAccessRequests()...)
					if req.PageToken = page.GetNextPageToken(); req.PageToken == "" {
						break
					}
				}
				if o.output == "json" {
					return printJSON(s.Out, list)
				}
				return printRequestTable(s.Out, list.GetAccessRequests(), time.Now())
			})
		},
	}
	o.flags(cmd)
	cmd.Flags().BoolVar(&mine, "mine", false, "only your own requests")
	cmd.Flags().BoolVar(&pending, "pending", false, "only the requests waiting for your review")
	cmd.Flags().BoolVar(&all, "all", false, "your requests and all of the elevations you approve, whatever their state")
	return cmd
}

func newRequestShowCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var o accessOptions
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a request, its approvals and its expiry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return accessCall(cmd.Context(), getStore, &o, func(ctx context.Context, c kaccessv1.AccessServiceClient) error {
				ctx, cancel := context.WithTimeout(ctx, callTimeout)
				defer cancel()
				resp, err := c.GetAccessRequest(ctx, &kaccessv1.GetAccessRequestRequest{Name: args[0]})
				if err != nil {
					return err
				}
				return printRequest(s.Out, o.output, resp.GetAccessRequest())
			})
		},
	}
	o.flags(cmd)
	return cmd
}

func newRequestDecideCommand(s Streams, getStore func() (Store, error), verb, short string) *cobra.Command {
	var o accessOptions
	var comment string
	cmd := &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return accessCall(cmd.Context(), getStore, &o, func(ctx context.Context, c kaccessv1.AccessServiceClient) error {
				ctx, cancel := context.WithTimeout(ctx, callTimeout)
				defer cancel()
				var r *kaccessv1.AccessRequest
				switch verb {
				case "approve":
					resp, err := c.ApproveAccessRequest(ctx, &kaccessv1.ApproveAccessRequestRequest{Name: args[0], Comment: comment})
					if err != nil {
						return err
					}
					r = resp.GetAccessRequest()
				case "deny":
					resp, err := c.DenyAccessRequest(ctx, &kaccessv1.DenyAccessRequestRequest{Name: args[0], Comment: comment})
					if err != nil {
						return err
					}
					r = resp.GetAccessRequest()
				default:
					resp, err := c.RevokeAccessRequest(ctx, &kaccessv1.RevokeAccessRequestRequest{Name: args[0], Comment: comment})
					if err != nil {
						return err
					}
					r = resp.GetAccessRequest()
				}
				if o.output == "json" {
					return printJSON(s.Out, r)
				}
				fmt.Fprintf(s.Out, "Request %s is now %s", r.GetName(), stateName(r.GetState()))
				switch {
				case r.GetState() == kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING:
					fmt.Fprintf(s.Out, " (%d of %d approvals)", len(r.GetApprovals()), r.GetApprovalsRequired())
				case r.GetExpireTime() != nil && r.GetState() == kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED:
					fmt.Fprintf(s.Out, " until %s", r.GetExpireTime().AsTime().Local().Format(time.RFC1123))
				}
				fmt.Fprintln(s.Out, ".")
				return nil
			})
		},
	}
	o.flags(cmd)
	cmd.Flags().StringVar(&comment, "comment", "", "a comment kept with your decision")
	return cmd
}

func newGrantsCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var o accessOptions
	cmd := &cobra.Command{
		Use:   "grants",
		Short: "List your grants in force and the time each has left",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return accessCall(cmd.Context(), getStore, &o, func(ctx context.Context, c kaccessv1.AccessServiceClient) error {
				ctx, cancel := context.WithTimeout(ctx, callTimeout)
				defer cancel()
				resp, err := c.ListGrants(ctx, &kaccessv1.ListGrantsRequest{})
				if err != nil {
					return err
				}
				if o.output == "json" {
					return printJSON(s.Out, resp)
				}
				return printGrants(s.Out, resp.GetGrants(), time.Now())
			})
		},
	}
	o.flags(cmd)
	return cmd
}

// stateName is "approved" for ACCESS_REQUEST_STATE_APPROVED.
func stateName(st kaccessv1.AccessRequestState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "ACCESS_REQUEST_STATE_"))
}

// timeLeft is how long until t, in whole seconds, or "expired".
func timeLeft(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d <= 0 {
		return "expired"
	}
	return d.String()
}

func printJSON(out io.Writer, m proto.Message) error {
	data, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(data))
	return err
}

func printRequest(out io.Writer, format string, r *kaccessv1.AccessRequest) error {
	if format == "json" {
		return printJSON(out, r)
	}
	scope := strings.Join(r.GetNamespaces(), ", ")
	if r.GetClusterWide() {
		scope = "cluster-wide"
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	when := func(ts interface{ AsTime() time.Time }, ok bool) string {
		if !ok {
			return ""
		}
		return ts.AsTime().Local().Format(time.RFC1123)
	}
	line("Name", r.GetName())
	line("Elevation", r.GetElevation())
	line("Role", r.GetRole())
	line("Scope", scope)
	line("Requester", r.GetRequester().GetUser())
	line("Duration", r.GetDuration().AsDuration().String())
	line("Reason", r.GetReason())
	line("Ticket", r.GetTicket())
	line("State", stateName(r.GetState()))
	line("Approvals", fmt.Sprintf("%d of %d", len(r.GetApprovals()), r.GetApprovalsRequired()))
	for _, rv := range r.GetApprovals() {
		line("  approved by", reviewLine(rv))
	}
	for _, rv := range r.GetDenials() {
		line("  denied by", reviewLine(rv))
	}
	line("Created", when(r.GetCreateTime(), r.GetCreateTime() != nil))
	if r.GetState() == kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_PENDING {
		line("Pending until", when(r.GetPendingExpireTime(), r.GetPendingExpireTime() != nil))
	}
	line("Approved", when(r.GetApproveTime(), r.GetApproveTime() != nil))
	if r.GetExpireTime() != nil {
		exp := r.GetExpireTime().AsTime()
		v := exp.Local().Format(time.RFC1123)
		if r.GetState() == kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED {
			v += " (" + timeLeft(exp, time.Now()) + " left)"
		}
		line("Expires", v)
	}
	line("Revoked by", r.GetRevokedBy())
	line("Ended", when(r.GetEndTime(), r.GetEndTime() != nil))
	return tw.Flush()
}

func reviewLine(rv *kaccessv1.Review) string {
	s := rv.GetReviewer() + " at " + rv.GetCreateTime().AsTime().Local().Format(time.RFC1123)
	if rv.GetComment() != "" {
		s += ": " + rv.GetComment()
	}
	return s
}

func printRequestTable(out io.Writer, rs []*kaccessv1.AccessRequest, now time.Time) error {
	if len(rs) == 0 {
		_, err := fmt.Fprintln(out, "No access requests.")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tELEVATION\tREQUESTER\tSTATE\tAPPROVALS\tEXPIRES\tREASON")
	for _, r := range rs {
		expires := "-"
		if r.GetExpireTime() != nil && r.GetState() == kaccessv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED {
			expires = "in " + timeLeft(r.GetExpireTime().AsTime(), now)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", r.GetName(), r.GetElevation(), r.GetRequester().GetUser(),
			stateName(r.GetState()), len(r.GetApprovals()), r.GetApprovalsRequired(), expires, oneLine(r.GetReason(), 40))
	}
	return tw.Flush()
}

func printGrants(out io.Writer, gs []*kaccessv1.Grant, now time.Time) error {
	if len(gs) == 0 {
		_, err := fmt.Fprintln(out, "No grants in force.")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUEST\tELEVATION\tROLE\tSCOPE\tEXPIRES\tLEFT")
	for _, g := range gs {
		scope := strings.Join(g.GetNamespaces(), ",")
		if g.GetClusterWide() {
			scope = "cluster-wide"
		}
		exp := g.GetExpireTime().AsTime()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", g.GetAccessRequest(), g.GetElevation(), g.GetRole(), scope,
			exp.Local().Format("15:04:05 MST"), timeLeft(exp, now))
	}
	return tw.Flush()
}

// oneLine keeps a table row on one line: newlines become spaces, long text is cut.
func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > limit {
		return string(r[:limit-1]) + "…"
	}
	return s
}
