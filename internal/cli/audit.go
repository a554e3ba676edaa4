package cli

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	kaccessv1 "github.com/kaccess/kaccess/api/gen/kaccess/v1"
)

// auditOptions are the flags the audit commands share.
type auditOptions struct {
	server, output, filter string
	since                  time.Duration
	from, to               string
	formats                []string // what --output accepts for the command
}

func (o *auditOptions) flags(cmd *cobra.Command, formats ...string) {
	o.formats = formats
	serverFlag(cmd, &o.server)
	cmd.Flags().StringVarP(&o.output, "output", "o", formats[0], "output format: "+strings.Join(formats, ", "))
	cmd.Flags().StringVar(&o.filter, "filter", "", `AIP-160 filter, e.g. 'user = "alice" AND verb:("get" "list")'`)
}

func (o *auditOptions) rangeFlags(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&o.since, "since", 24*time.Hour, "how far back from now (ignored with --from)")
	cmd.Flags().StringVar(&o.from, "from", "", "start of the range, RFC 3339 (e.g. 2026-11-24T08:00:00Z)")
	cmd.Flags().StringVar(&o.to, "to", "", "end of the range, RFC 3339 (default now)")
}

func (o *auditOptions) check() error {
	for _, f := range o.formats {
		if o.output == f {
			return nil
		}
	}
	return fmt.Errorf("--output %q: want %s", o.output, strings.Join(o.formats, " or "))
}

// timeRange turns --since/--from/--to into the API's start and end; now is injected for tests.
func (o *auditOptions) timeRange(now time.Time) (start, end *timestamppb.Timestamp, err error) {
	to := now
	if o.to != "" {
		if to, err = time.Parse(time.RFC3339Nano, o.to); err != nil {
			return nil, nil, fmt.Errorf("--to %q: use RFC 3339, such as 2026-11-24T18:00:00Z", o.to)
		}
	}
	from := to.Add(-o.since)
	if o.from != "" {
		if from, err = time.Parse(time.RFC3339Nano, o.from); err != nil {
			return nil, nil, fmt.Errorf("--from %q: use RFC 3339, such as 2026-11-24T08:00:00Z", o.from)
		}
	}
	if !from.Before(to) {
		return nil, nil, fmt.Errorf("the range is empty: %s is not before %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return timestamppb.New(from), timestamppb.New(to), nil
}

// auditCall opens the kept session of o.server and runs f with AuditService and a context
// carrying the session token.
func auditCall(ctx context.Context, getStore func() (Store, error), o *auditOptions,
	f func(ctx context.Context, c kaccessv1.AuditServiceClient, auth kaccessv1.AuthServiceClient) error) error {
	if err := o.check(); err != nil {
		return err
	}
	return sessionCall(ctx, getStore, o.server, func(ctx context.Context, _ *Session, c *apiClient) error {
		return f(ctx, kaccessv1.NewAuditServiceClient(c.conn), c.auth)
	})
}

func newAuditCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Search, follow and export the audit record, run detections and see their findings",
		Long: `Query the gateway's audit record. Members of the auditor groups see everyone's events;
everyone else sees only their own. Every query is itself recorded.

Filters follow AIP-160 over the event fields: user, groups, verb, resource, namespace, name,
response_code, decision, source_ip, user_agent, kind, cluster, time, latency_ns, ...`,
		Example: `  kaccess audit search --filter 'user = "alice" AND resource = "secrets"' --since 24h
  kaccess audit search --filter 'response_code >= 400' --all -o csv > failures.csv
  kaccess audit tail --filter 'namespace = "kube-system"'
  kaccess audit export --from 2026-11-01T00:00:00Z --to 2026-11-08T00:00:00Z -o csv > week.csv
  kaccess audit detect --since 24h
  kaccess audit findings --state firing
  kaccess audit mine --since 1h`,
	}
	cmd.AddCommand(
		newAuditSearchCommand(s, getStore, false),
		newAuditSearchCommand(s, getStore, true),
		newAuditTailCommand(s, getStore),
		newAuditExportCommand(s, getStore),
		newAuditDetectCommand(s, getStore),
		newAuditFindingsCommand(s, getStore),
	)
	return cmd
}

// newAuditSearchCommand is `audit search`, or with mine `audit mine`: the caller's own events,
// even for an auditor.
func newAuditSearchCommand(s Streams, getStore func() (Store, error), mine bool) *cobra.Command {
	var o auditOptions
	var pageSize int32
	var all, asc bool
	use, short := "search", "Search audit events (newest first)"
	if mine {
		use, short = "mine", "Show your own audit events (newest first)"
	}
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start, end, err := o.timeRange(time.Now())
			if err != nil {
				return err
			}
			return auditCall(cmd.Context(), getStore, &o, func(ctx context.Context, c kaccessv1.AuditServiceClient, auth kaccessv1.AuthServiceClient) error {
				filter := o.filter
				if mine {
					callCtx, cancel := context.WithTimeout(ctx, callTimeout)
					who, err := auth.WhoAmI(callCtx, &kaccessv1.WhoAmIRequest{})
					cancel()
					if err != nil {
						return err
					}
					filter = andFilter("user = "+quoteFilter(who.GetIdentity().GetUser()), filter)
				}
				req := &kaccessv1.SearchEventsRequest{StartTime: start, EndTime: end, Filter: filter, PageSize: pageSize}
				if asc {
					req.OrderBy = "time asc"
				}
				p := newEventPrinter(s.Out, o.output)
				for {
					callCtx, cancel := context.WithTimeout(ctx, callTimeout)
					page, err := c.SearchEvents(callCtx, req)
					cancel()
					if err != nil {
						return err
					}
					if err := p.print(page.GetEvents()...); err != nil {
						return err
					}
					req.PageToken = page.GetNextPageToken()
					if req.PageToken == "" || !all {
						break
					}
				}
				if err := p.flush(); err != nil {
					return err
				}
				if req.PageToken != "" && o.output == "table" {
					fmt.Fprintln(s.Err, "More events match: add --all to page through them, or narrow --filter / --since.")
				}
				return nil
			})
		},
	}
	o.flags(cmd, "table", "json", "csv")
	o.rangeFlags(cmd)
	cmd.Flags().Int32Var(&pageSize, "page-size", 50, "events per page (at most 1000)")
	cmd.Flags().BoolVar(&all, "all", false, "follow page tokens to the last page")
	cmd.Flags().BoolVar(&asc, "oldest-first", false, "oldest events first")
	return cmd
}

// andFilter joins two filters; the second keeps its own precedence in parentheses.
func andFilter(a, b string) string {
	if strings.TrimSpace(b) == "" {
		return a
	}
	return a + " AND (" + b + ")"
}

// quoteFilter quotes a value as an AIP-160 string.
func quoteFilter(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}

func newAuditTailCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var o auditOptions
	cmd := &cobra.Command{
		Use: "tail", Short: "Follow new audit events as they are written (Ctrl-C to stop)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return auditCall(cmd.Context(), getStore, &o, func(ctx context.Context, c kaccessv1.AuditServiceClient, _ kaccessv1.AuthServiceClient) error {
				stream, err := c.TailEvents(ctx, &kaccessv1.TailEventsRequest{Filter: o.filter})
				if err != nil {
					return err
				}
				p := newEventPrinter(s.Out, o.output)
				for {
					resp, err := stream.Recv()
					if errors.Is(err, io.EOF) || (err != nil && ctx.Err() != nil) {
						return p.flush()
					}
					if err != nil {
						return err
					}
					// Each event is shown at once: a tail is watched, not read at the end.
					if err := p.print(resp.GetEvent()); err != nil {
						return err
					}
					if err := p.flush(); err != nil {
						return err
					}
				}
			})
		},
	}
	o.flags(cmd, "table", "json", "csv")
	return cmd
}

// exportFormats are what `audit export --output` (or --format) accepts, in the order the help
// lists them: kaccess' own JSON lines, CSV, and Kubernetes' audit.k8s.io/v1 Event JSON lines.
var exportFormats = []struct {
	name   string
	format kaccessv1.ExportFormat
}{
	{"jsonl", kaccessv1.ExportFormat_EXPORT_FORMAT_JSONL},
	{"csv", kaccessv1.ExportFormat_EXPORT_FORMAT_CSV},
	{"k8s", kaccessv1.ExportFormat_EXPORT_FORMAT_K8S},
}

func newAuditExportCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var o auditOptions
	var formatFlag string
	cmd := &cobra.Command{
		Use: "export", Short: "Write every event of a range to standard output as JSON lines, CSV or Kubernetes audit events", Args: cobra.NoArgs,
		Long: `Write every event of a range to standard output.

Formats (--output, or its alias --format):
  jsonl  one kaccess audit event as JSON per line (the default)
  csv    comma-separated values with a header line
  k8s    one Kubernetes audit event (audit.k8s.io/v1 Event) as JSON per line, as
         kube-apiserver's log backend writes them, with the recorded bodies: for
         Falco's k8saudit plugin or a SIEM that reads the API server's audit log`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("format") {
				if !slices.Contains(o.formats, formatFlag) {
					return fmt.Errorf("--format %q: want %s", formatFlag, strings.Join(o.formats, " or "))
				}
				if cmd.Flags().Changed("output") && o.output != formatFlag {
					return fmt.Errorf("--format %q and --output %q disagree: give one of them", formatFlag, o.output)
				}
				o.output = formatFlag
			}
			start, end, err := o.timeRange(time.Now())
			if err != nil {
				return err
			}
			format := kaccessv1.ExportFormat_EXPORT_FORMAT_JSONL
			for _, f := range exportFormats {
				if o.output == f.name {
					format = f.format
				}
			}
			return auditCall(cmd.Context(), getStore, &o, func(ctx context.Context, c kaccessv1.AuditServiceClient, _ kaccessv1.AuthServiceClient) error {
				stream, err := c.ExportEvents(ctx, &kaccessv1.ExportEventsRequest{StartTime: start, EndTime: end, Filter: o.filter, Format: format})
				if err != nil {
					return err
				}
				for {
					chunk, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						return nil
					}
					if err != nil {
						return err
					}
					// Chunks hold whole lines without the last line break (see ExportEvents).
					if len(chunk.GetData()) == 0 {
						continue
					}
					if _, err := s.Out.Write(append(chunk.GetData(), '\n')); err != nil {
						return err
					}
				}
			})
		},
	}
	names := make([]string, len(exportFormats))
	for i, f := range exportFormats {
		names[i] = f.name
	}
	o.flags(cmd, names...)
	cmd.Flags().StringVar(&formatFlag, "format", names[0], "the same as --output")
	o.rangeFlags(cmd)
	return cmd
}

func newAuditDetectCommand(s Streams, getStore func() (Store, error)) *cobra.Command {
	var o auditOptions
	var names []string
	var list bool
	cmd := &cobra.Command{
		Use: "detect", Short: "Run the built-in detections over a time window (auditors), or --list them", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start, end, err := o.timeRange(time.Now())
			if err != nil {
				return err
			}
			return auditCall(cmd.Context(), getStore, &o, func(ctx context.Context, c kaccessv1.AuditServiceClient, _ kaccessv1.AuthServiceClient) error {
				callCtx, cancel := context.WithTimeout(ctx, 5*callTimeout)
				defer cancel()
				if list {
					resp, err := c.ListDetections(callCtx, &kaccessv1.ListDetectionsRequest{})
					if err != nil {
						return err
					}
					if o.output == "json" {
						return printJSON(s.Out, resp)
					}
					tw := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "NAME\tSEVERITY\tMITRE\tTITLE")
					for _, d := range resp.GetDetections() {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.GetName(), d.GetSeverity(), orDash(d.GetMitreTechnique()), orDash(d.GetTitle()))
					}
					return tw.Flush()
				}
				resp, err := c.RunDetections(callCtx, &kaccessv1.RunDetectionsRequest{StartTime: start, EndTime: end, Names: names})
				if err != nil {
					return err
				}
				if o.output == "json" {
					return printJSON(s.Out, resp)
				}
				if len(resp.GetFindings()) == 0 {
					fmt.Fprintf(s.Out, "No findings between %s and %s.\n", start.AsTime().Local().Format(time.RFC3339), end.AsTime().Local().Format(time.RFC3339))
					return nil
				}
				tw := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "FIRST SEEN\tSEVERITY\tDETECTION\tCLUSTER\tSUBJECT\tEVENTS\tSUMMARY")
				for _, f := range resp.GetFindings() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", f.GetFirstSeenTime().AsTime().Local().Format(time.DateTime),
						f.GetSeverity(), f.GetDetection(), orDash(f.GetCluster()), orDash(strings.Map(printable, f.GetSubject())),
						f.GetCount(), strings.Map(printable, f.GetSummary()))
				}
				return tw.Flush()
			})
		},
	}
	o.flags(cmd, "table", "json")
	o.rangeFlags(cmd)
	cmd.Flags().StringSliceVar(&names, "name", nil, "only these detections (repeat or comma-separate; default all)")
	cmd.Flags().BoolVar(&list, "list", false, "list the detections instead of running them")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// eventPrinter writes events as a table, JSON lines or CSV, a page at a time.
type eventPrinter struct {
	format string
	out    io.Writer
	tw     *tabwriter.Writer
	csv    *csv.Writer
	header bool
}

func newEventPrinter(out io.Writer, format string) *eventPrinter {
	p := &eventPrinter{format: format, out: out}
	switch format {
	case "table":
		p.tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	case "csv":
		p.csv = csv.NewWriter(out)
	}
	return p
}

var eventColumns = []string{"TIME", "USER", "VERB", "RESOURCE", "NAMESPACE", "NAME", "CODE", "DECISION", "REASON", "SOURCE_IP", "EVENT_ID"}

func eventRow(e *kaccessv1.AuditEvent, local bool) []string {
	at := e.GetTime().AsTime()
	ts := at.UTC().Format(time.RFC3339Nano)
	if local {
		ts = at.Local().Format("2006-01-02 15:04:05")
	}
	res := e.GetResource()
	if e.GetSubresource() != "" {
		res += "/" + e.GetSubresource()
	}
	if e.GetKind() != "" && e.GetKind() != "request" {
		res = e.GetKind()
	}
	return []string{ts, e.GetUser(), e.GetVerb(), res, e.GetNamespace(), e.GetName(),
		strconv.Itoa(int(e.GetResponseCode())), e.GetDecision(), e.GetRefusalReason(), e.GetSourceIp(), e.GetEventId()}
}

func (p *eventPrinter) print(events ...*kaccessv1.AuditEvent) error {
	for _, e := range events {
		switch p.format {
		case "json":
			b, err := protojson.Marshal(e)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintln(p.out, string(b)); err != nil {
				return err
			}
		case "csv":
			if !p.header {
				p.header = true
				if err := p.csv.Write(lower(eventColumns)); err != nil {
					return err
				}
			}
			if err := p.csv.Write(eventRow(e, false)); err != nil {
				return err
			}
		default:
			if !p.header {
				p.header = true
				fmt.Fprintln(p.tw, strings.Join(eventColumns, "\t"))
			}
			row := eventRow(e, true)
			for i := range row {
				row[i] = orDash(strings.Map(printable, row[i]))
			}
			fmt.Fprintln(p.tw, strings.Join(row, "\t"))
		}
	}
	return nil
}

// printable keeps control characters of recorded values (a user agent may hold anything) from
// reaching the terminal.
func printable(r rune) rune {
	if r < 0x20 || r == 0x7f {
		return '?'
	}
	return r
}

func (p *eventPrinter) flush() error {
	switch {
	case p.tw != nil:
		if !p.header {
			p.header = true
			fmt.Fprintln(p.out, "No events.")
			return nil
		}
		return p.tw.Flush()
	case p.csv != nil:
		p.csv.Flush()
		return p.csv.Error()
	}
	return nil
}

func lower(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strings.ToLower(v)
	}
	return out
}
