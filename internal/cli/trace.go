package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/telemetry"
)

// Polling of `corral trace --wait`.
const (
	tracePollEvery = 250 * time.Millisecond
	// traceSettle is how long the span count must hold still before --wait
	// takes a trace as complete: spans of one action can land in two
	// batches of the store.
	traceSettle = 1200 * time.Millisecond
)

func newTrace(s streams) *cobra.Command {
	var (
		cf   clientFlags
		wait time.Duration
	)
	cmd := &cobra.Command{
		Use:   "trace TRACE_ID [-o tree|json] [--wait 5s]",
		Short: "Show one trace: an action's spans as a tree, with timings and decisions",
		Long: `Every action corral serves leaves OpenTelemetry spans: one for the action,
and one under it for each stage that did work (policy, validation, budget,
redaction, the upstream call, ...). corral keeps them in its own trace store,
on JetStream, for 7 days by default, whether or not they are also exported to
a collector over OTLP.

'corral trace' prints a trace as a tree: each span's start (from the first
span of the trace) and duration, and what it decided: the agent, policy
effect and reasons, model and tokens, cost, the problem code, the HTTP status
of upstream calls, errors. A span whose parent is not stored (the caller's
own span) starts a tree of its own.

TRACE_ID is the 32 hex digits of a trace id, as in the traceparent header the
caller sent (a whole traceparent is accepted too) or the traceresponse header
corral answered with.

Spans are written about a second after their action ends. --wait polls until
the trace appears and its spans stop arriving, for at most that long: handy
in scripts right after a call. -o json prints the server's answer:
{"trace_id": ..., "spans": [...]}, each span with trace_id, span_id,
parent_span_id, name, kind, start, end, duration_ms, status, attributes,
events and service.`,
		Example: `  corral trace 4bf92f3577b34da6a3ce929d0e0e4736
  corral trace 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
  corral trace "$TRACE_ID" --wait 5s -o json | jq '.spans[] | {name, duration_ms}'`,
		Args: cobra.ExactArgs(1),
	}
	cf.register(cmd)
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the trace to appear and settle (5s); 0 asks once")
	output := outputFlag(cmd, "tree", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		id, ok := traceArg(args[0])
		if !ok {
			return usageError{cmd, fmt.Errorf("%q is not a trace id: want 32 hex digits (or a traceparent)", oneLine(args[0], 80))}
		}
		if wait < 0 {
			return usageError{cmd, fmt.Errorf("--wait %v: must not be negative", wait)}
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		raw, err := fetchTrace(cmd.Context(), c, id, wait)
		if err != nil {
			return err
		}
		if *output == "json" {
			_, err := s.out.Write(append(bytes.TrimRight(raw, "\n"), '\n'))
			return err
		}
		var tr api.TraceResponse
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&tr); err != nil {
			return fmt.Errorf("decode trace %s: %w", id, err)
		}
		return writeTraceTree(s.out, tr)
	}
	return cmd
}

// traceArg reads a trace id, or the trace id of a traceparent
// (00-TRACE-SPAN-FLAGS), in either case.
func traceArg(s string) (string, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	if parts := strings.Split(s, "-"); len(parts) == 4 && len(parts[0]) == 2 && len(parts[2]) == 16 && len(parts[3]) == 2 {
		s = parts[1]
	}
	return s, telemetry.ValidTraceID(s)
}

// fetchTrace asks for the trace; with wait, it asks again until the trace
// is there and its span count has held still for traceSettle, or wait ends.
func fetchTrace(ctx context.Context, c *client, id string, wait time.Duration) (json.RawMessage, error) {
	deadline := time.Now().Add(wait)
	var (
		last      json.RawMessage
		lastCount = -1
		stableAt  time.Time
	)
	for {
		var raw json.RawMessage
		err := c.do(ctx, "GET", "/v1/traces/"+id, nil, &raw)
		var ae *apiError
		notFound := errors.As(err, &ae) && ae.Status == http.StatusNotFound
		if err != nil && !(notFound && wait > 0) {
			return nil, err
		}
		if err == nil {
			if wait == 0 {
				return raw, nil
			}
			var probe struct {
				Spans []json.RawMessage `json:"spans"`
			}
			if err := json.Unmarshal(raw, &probe); err != nil {
				return nil, fmt.Errorf("decode trace %s: %w", id, err)
			}
			if len(probe.Spans) != lastCount {
				last, lastCount, stableAt = raw, len(probe.Spans), time.Now()
			}
			if time.Since(stableAt) >= traceSettle {
				return last, nil
			}
		}
		if time.Now().After(deadline) {
			if last != nil {
				return last, nil
			}
			return nil, fmt.Errorf("%w (waited %v)", err, wait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(tracePollEvery):
		}
	}
}

// writeTraceTree prints the spans as trees, children under their parent in
// start order, with each span's start offset and duration.
func writeTraceTree(w io.Writer, tr api.TraceResponse) error {
	spans := tr.Spans
	if len(spans) == 0 {
		_, err := fmt.Fprintf(w, "trace %s: no spans\n", tr.TraceID)
		return err
	}
	byID := make(map[string]int, len(spans))
	for i, sp := range spans {
		byID[sp.SpanID] = i
	}
	children := map[string][]int{}
	var roots []int
	first, last := spans[0].Start, spans[0].End
	for i, sp := range spans {
		if _, ok := byID[sp.ParentSpanID]; ok && sp.ParentSpanID != sp.SpanID {
			children[sp.ParentSpanID] = append(children[sp.ParentSpanID], i)
		} else {
			roots = append(roots, i)
		}
		if sp.Start.Before(first) {
			first = sp.Start
		}
		if sp.End.After(last) {
			last = sp.End
		}
	}
	byStart := func(a, b int) int { return spans[a].Start.Compare(spans[b].Start) }
	slices.SortStableFunc(roots, byStart)
	for _, c := range children {
		slices.SortStableFunc(c, byStart)
	}
	fmt.Fprintf(w, "trace %s: %d spans, %s\n", tr.TraceID, len(spans), spanDuration(float64(last.Sub(first))/float64(time.Millisecond)))
	var table bytes.Buffer
	tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tDURATION\tSPAN\tDETAILS")
	rootService := spans[roots[0]].Service
	seen := make([]bool, len(spans))
	var walk func(i int, prefix, branch string)
	walk = func(i int, prefix, branch string) {
		if seen[i] {
			return // a parent cycle in stored data: print each span once
		}
		seen[i] = true
		sp := spans[i]
		fmt.Fprintf(tw, "%s\t%s\t%s%s\t%s\n", spanOffset(sp.Start.Sub(first)), spanDuration(sp.DurationMS),
			prefix+branch, oneLine(sp.Name, 60), spanDetails(sp, rootService))
		kids := children[sp.SpanID]
		for n, k := range kids {
			next, b := prefix, "├─ "
			switch branch {
			case "├─ ":
				next += "│  "
			case "└─ ":
				next += "   "
			}
			if n == len(kids)-1 {
				b = "└─ "
			}
			walk(k, next, b)
		}
	}
	for _, r := range roots {
		walk(r, "", "")
	}
	// Spans caught in a parent cycle have no root: show them anyway.
	for i := range spans {
		if !seen[i] {
			walk(i, "", "")
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// A span without details would end in the padding of its name.
	for line := range strings.Lines(table.String()) {
		if _, err := io.WriteString(w, strings.TrimRight(line, " \n")+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// spanOffset prints how long after the trace's first span a span started.
func spanOffset(d time.Duration) string {
	if d <= 0 {
		return "0"
	}
	return "+" + spanDuration(float64(d)/float64(time.Millisecond))
}

// spanDuration prints milliseconds the way people read them, down to µs.
func spanDuration(ms float64) string {
	if ms <= 0 {
		return "0"
	}
	return auditDuration(ms)
}

// traceDetail is an attribute worth a place on a span's line.
type traceDetail struct {
	key   string
	label string
}

// traceDetails are shown in this order, when a span has them.
var traceDetails = []traceDetail{
	{string(telemetry.AttrAgent), "agent"},
	{string(telemetry.AttrPrincipal), "principal"},
	{string(telemetry.AttrGenAIRequestModel), "model"},
	{"", "tokens"}, // gen_ai.usage.input_tokens/output_tokens, together
	{string(telemetry.AttrCost), "cost"},
	{string(telemetry.AttrPolicyEffect), "effect"},
	{string(telemetry.AttrPolicyReasons), "reasons"},
	{string(telemetry.AttrBudgetExceeded), "budget_exceeded"},
	{string(telemetry.AttrBudgetRemaining), "budget_left"},
	{string(telemetry.AttrRedactCount), "redacted"},
	{string(telemetry.AttrReplayed), "replayed"},
	{string(telemetry.AttrUpstreamAttempts), "attempts"},
	{string(telemetry.AttrHTTPResponseStatusCode), "http"},
	{string(telemetry.AttrURLFull), "url"},
	{string(telemetry.AttrCode), "code"},
	{string(telemetry.AttrErrorType), "error"},
}

// spanDetails is the line's last column: the interesting attributes, the
// error status when it says more than the code, and the service when it is
// not the root's.
func spanDetails(sp telemetry.Span, rootService string) string {
	var parts []string
	add := func(label, value string) {
		parts = append(parts, label+"="+detailValue(value))
	}
	for _, d := range traceDetails {
		if d.key == "" {
			in, okIn := sp.Attributes[string(telemetry.AttrGenAIUsageInputTokens)]
			out, okOut := sp.Attributes[string(telemetry.AttrGenAIUsageOutputTokens)]
			if okIn || okOut {
				add(d.label, cmp.Or(attrString(in), "?")+"/"+cmp.Or(attrString(out), "?"))
			}
			continue
		}
		v, ok := sp.Attributes[d.key]
		if !ok {
			continue
		}
		if d.key == string(telemetry.AttrErrorType) && sp.Attributes[string(telemetry.AttrHTTPResponseStatusCode)] != nil {
			continue // the status says it
		}
		add(d.label, attrString(v))
	}
	if sp.Status.Code == "error" && sp.Status.Message != "" && sp.Status.Message != attrString(sp.Attributes[string(telemetry.AttrCode)]) {
		add("status", sp.Status.Message)
	}
	if sp.Service != "" && sp.Service != rootService {
		add("service", sp.Service)
	}
	return strings.Join(parts, " ")
}

// attrString prints an attribute value: lists joined by "; ".
func attrString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case []any:
		items := make([]string, len(v))
		for i, x := range v {
			items[i] = attrString(x)
		}
		return strings.Join(items, "; ")
	}
	return fmt.Sprint(v)
}

// detailValue keeps a value on one short line, quoted when it has spaces.
func detailValue(s string) string {
	s = oneLine(s, 80)
	if s == "" || strings.ContainsAny(s, " \t\"=") {
		return strconv.Quote(s)
	}
	return s
}
