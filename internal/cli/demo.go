package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/examples"
	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/demo"
	"github.com/corral-dev/corral/internal/edge/rest"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/orchestrator"
)

func newDemo(s streams) *cobra.Command {
	var (
		f    serverFlags
		keep bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run corral on an embedded substrate and walk through what it does",
		Long: `Start corral with an embedded JetStream in a fresh temporary directory (or
--data), then use its HTTP API the way the CLI does: apply the example agents,
apply them again (nothing changes), change one, and send a broken file that is
refused with the field named and nothing stored. Then list what is stored.

Then the tool gateway: start the demo world's logistics system on loopback,
import its OpenAPI document as a ToolSource, and act as the agent "impact":
trade its key for a short-lived token at /oauth2/token, list its tools, call
one, be refused for wrong arguments and for a tool outside its token's scope,
see policy park the agent "returns"'s destructive call for a human
(202 approval_pending), run a hosted agent's durable task as 'corral run'
shows it, be stopped by a kill switch, and read the audit.

It exits when done; with --keep it goes on serving until interrupted, and
prints how to point the CLI at it.`,
		Example: `  corral demo
  corral demo --keep
  corral demo --data ./demo-data --http 127.0.0.1:7070 --keep`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.data == "" {
				dir, err := os.MkdirTemp("", "corral-demo-")
				if err != nil {
					return err
				}
				defer func() {
					if !keep {
						os.RemoveAll(dir)
					}
				}()
				f.data = dir
			}
			cfg, logger, err := f.build(s)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), s, logger, cfg, func(ctx context.Context, a *app.App) error {
				return tour(ctx, s, a, keep)
			})
		},
	}
	f.register(cmd, serverDefaults{
		dataUsage: "data directory (default: a new temporary directory, removed afterwards unless --keep)",
		http:      "127.0.0.1:0", // never collide with a corral already on the default port
		logLevel:  "warn",        // the tour's output is the point
	})
	cmd.Flags().BoolVar(&keep, "keep", false, "keep serving after the tour, until interrupted")
	return cmd
}

// tour drives a running corral through its HTTP API, printing each step.
func tour(ctx context.Context, s streams, a *app.App, keep bool) error {
	path, _ := a.AdminToken()
	token, err := identity.ReadToken(path)
	if err != nil {
		return err
	}
	c := newClient(a.URL(), token)

	docs, err := exampleDocuments()
	if err != nil {
		return err
	}
	step := func(n int, title string) { fmt.Fprintf(s.out, "\n[%d/12] %s\n", n, title) }
	apply := func(docs []config.Document) error {
		results, err := c.apply(ctx, docs)
		if err != nil {
			return err
		}
		for _, r := range results {
			fmt.Fprintf(s.out, "  %s %s (revision %d)\n", r.Resource.ID(), r.Result, r.Resource.Metadata.Revision)
		}
		return nil
	}

	step(1, "apply the example files (examples/*.yaml: agents, models, a budget): stored in a JetStream key-value bucket")
	if err := apply(docs); err != nil {
		return err
	}
	step(2, "apply the same file again: nothing changes")
	if err := apply(docs); err != nil {
		return err
	}
	step(3, "change one agent's description: only that one is configured")
	changed := docs[0]
	var spec config.AgentSpec
	if err := json.Unmarshal(changed.Resource.Spec, &spec); err != nil {
		return err
	}
	spec.Description = "Finds delayed orders, now with the carrier's new delay codes."
	if changed.Resource.Spec, err = json.Marshal(spec); err != nil {
		return err
	}
	if err := apply([]config.Document{changed}); err != nil {
		return err
	}
	step(4, "send a broken set straight to the API: 422 problem+json, every problem named, nothing stored")
	broken := api.ApplyRequest{Resources: []json.RawMessage{
		json.RawMessage(`{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"fine"},"spec":{}}`),
		json.RawMessage(`{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"Bad_Name"},"spec":{"description":42,"tools":["erp.*"]}}`),
	}}
	err = c.do(ctx, "POST", "/v1/apply", broken, nil)
	var refused *apiError
	if !errors.As(err, &refused) {
		return fmt.Errorf("demo: the broken set was not refused as a problem: %v", err)
	}
	fmt.Fprintf(s.out, "  HTTP %d %s: %s\n", refused.Status, refused.Code, refused.Detail)
	for _, e := range refused.fieldErrors {
		fmt.Fprintf(s.out, "  %s\n", e)
	}
	step(5, "what is stored now (corral get agents)")
	var list struct{ Items []config.Resource }
	if err := c.do(ctx, "GET", "/v1/resources/agents", nil, &list); err != nil {
		return err
	}
	if err := writeTable(s, list.Items, time.Now()); err != nil {
		return err
	}
	for _, it := range list.Items {
		if it.Metadata.Name == "fine" {
			return errors.New("demo: a resource from the broken file was stored")
		}
	}

	// The demo world's logistics system serves for as long as the tour,
	// --keep included.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	world := http.NewServeMux()
	world.Handle("/", demo.NewLogistics())
	model := demo.NewModel()
	world.Handle("/v1/", model)
	logistics := &http.Server{Handler: world, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = logistics.Serve(ln) // ends with Close below
	}()
	defer func() {
		logistics.Close()
		<-served
	}()
	if err := toolTour(ctx, s, c, "http://"+ln.Addr().String(), step); err != nil {
		return err
	}
	if err := modelTour(ctx, s, c, "http://"+ln.Addr().String()+"/v1", model, step); err != nil {
		return err
	}
	if err := taskTour(ctx, s, c, step); err != nil {
		return err
	}
	if err := killTour(ctx, s, c, step); err != nil {
		return err
	}

	if !keep {
		fmt.Fprintf(s.out, "\ndone. Run 'corral demo --keep' to keep the server up and try the CLI against it.\n")
		return nil
	}
	fmt.Fprintf(s.out, "\ncorral keeps serving; in another shell:\n  export CORRAL_SERVER=%s CORRAL_TOKEN=$(cat %s)\n  corral get agents\n  corral get tools\n  corral audit\nInterrupt (Ctrl-C) to stop.\n", a.URL(), path)
	<-ctx.Done()
	return nil
}

// exampleDocuments decodes the example files embedded in the binary.
func exampleDocuments() ([]config.Document, error) {
	var docs []config.Document
	err := fs.WalkDir(examples.Files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := examples.Files.ReadFile(path)
		if err != nil {
			return err
		}
		got, err := config.Decode("examples/"+path, data)
		docs = append(docs, got...)
		return err
	})
	return docs, err
}

// toolTour shows the tool gateway: the demo world's logistics system behind
// corral, called as the agent "impact".
func toolTour(ctx context.Context, s streams, c *client, logisticsURL string, step func(int, string)) error {
	step(6, "import the logistics system's OpenAPI document as ToolSource/logistics: one tool per operation")
	src, ops, err := importOpenAPIData(logisticsSource, demo.LogisticsSpec, logisticsURL)
	if err != nil {
		return err
	}
	if _, err := c.apply(ctx, []config.Document{{Source: "demo", Index: 1, Resource: src}}); err != nil {
		return err
	}
	if err := writeToolTable(indent(s.out), ops); err != nil {
		return err
	}
	var created api.CreatedKey
	if err := c.do(ctx, "POST", "/v1/keys", api.CreateKeyRequest{Agent: "impact"}, &created); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "  an API key for Agent/impact: %s... (shown once; corral keeps its hash)\n", created.Secret[:16])
	access, err := clientCredentials(ctx, c.base, "impact", created.Secret)
	if err != nil {
		return err
	}
	fmt.Fprintf(s.out, "  POST /oauth2/token (client_credentials) -> a %ds token, scope %q, signed by corral (/.well-known/jwks.json)\n", access.ExpiresIn, access.Scope)
	agent := newClient(c.base, access.AccessToken)

	step(7, "as Agent/impact, with its token: list my tools, call one")
	var list rest.ToolList
	deadline := time.Now().Add(10 * time.Second)
	for len(list.Tools) < 2 { // the source loads in the background
		if err := agent.do(ctx, "GET", "/v1/tools", nil, &list); err != nil {
			return err
		}
		if len(list.Tools) < 2 {
			if time.Now().After(deadline) {
				return errors.New("demo: the logistics tools did not load")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, t := range list.Tools {
		fmt.Fprintf(s.out, "  %s (%s)\n", t.Name, annotations(t.Annotations))
	}
	var answer rest.InvokeResponse
	if err := agent.do(ctx, "POST", "/v1/tools/logistics.list_delayed_shipments/invoke",
		rest.InvokeRequest{Arguments: json.RawMessage(`{"min_hours": 24}`)}, &answer); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "  POST /v1/tools/logistics.list_delayed_shipments/invoke {\"min_hours\": 24}\n  -> %s\n", compactJSON(answer.Result))

	step(8, "refused before anything reaches the system: wrong arguments, a tool outside the agent's list, a destructive tool")
	var returnsKey api.CreatedKey
	if err := c.do(ctx, "POST", "/v1/keys", api.CreateKeyRequest{Agent: "returns"}, &returnsKey); err != nil {
		return err
	}
	returns := newClient(c.base, returnsKey.Secret)
	for _, call := range []struct {
		as         *client
		who        string
		tool, args string
	}{
		{agent, "impact", "logistics.get_order", `{"order_id": "1001"}`},
		{agent, "impact", "logistics.cancel_order", `{"order_id": "ORD-1001"}`},
		{returns, "returns", "logistics.cancel_order", `{"order_id": "ORD-1001"}`},
	} {
		err := call.as.do(ctx, "POST", "/v1/tools/"+call.tool+"/invoke", rest.InvokeRequest{Arguments: json.RawMessage(call.args)}, nil)
		var refused *apiError
		if !errors.As(err, &refused) {
			return fmt.Errorf("demo: %s was not refused: %v", call.tool, err)
		}
		fmt.Fprintf(s.out, "  %s: %s %s -> HTTP %d %s: %s\n", call.who, call.tool, call.args, refused.Status, refused.Code, refused.Detail)
	}

	return nil
}

// killTour stops the agent impact with a kill switch, then shows the audit.
func killTour(ctx context.Context, s streams, c *client, step func(int, string)) error {
	var created api.CreatedKey
	if err := c.do(ctx, "POST", "/v1/keys", api.CreateKeyRequest{Agent: "impact"}, &created); err != nil {
		return err
	}
	agent := newClient(c.base, created.Secret)
	step(12, "corral kill --agent impact: every replica refuses it at once; then the audit")
	if err := c.do(ctx, "POST", "/v1/killswitches", api.KillRequest{Agent: "impact", Reason: "demo"}, nil); err != nil {
		return err
	}
	err := agent.do(ctx, "POST", "/v1/tools/logistics.get_order/invoke", rest.InvokeRequest{Arguments: json.RawMessage(`{"order_id": "ORD-1001"}`)}, nil)
	var killed *apiError
	if !errors.As(err, &killed) {
		return fmt.Errorf("demo: the killed agent was not refused: %v", err)
	}
	fmt.Fprintf(s.out, "  logistics.get_order -> HTTP %d %s: %s\n", killed.Status, killed.Code, killed.Detail)
	if err := c.do(ctx, "DELETE", "/v1/killswitches/agent/impact", nil, nil); err != nil {
		return err
	}
	var records struct {
		Records []audit.Record `json:"records"`
	}
	if err := c.do(ctx, "GET", "/v1/audit?since=1h", nil, &records); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  AGENT\tTARGET\tDECISION\tCODE\tSTATUS\tDURATION")
	for _, r := range records.Records {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%.2fms\n", r.Agent, r.Target, r.Decision, orDash(r.Code), r.Status, r.DurationMS)
	}
	return tw.Flush()
}

// trackerDocs are a hosted agent and its scripted model for the task tour.
const trackerDocs = `apiVersion: corral.dev/v1
kind: Model
metadata: {name: tracker-model}
spec:
  provider: scripted
  script:
    - content: "Let me look the order up."
      toolCalls: [{name: logistics__get_order, arguments: {order_id: ORD-1001}}]
    - content: "ORD-1001 is in transit; nothing to do."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: tracker}
spec:
  description: Tracks orders; corral runs its loop.
  model: tracker-model
  models: [tracker-model]
  tools: ["logistics.get_*"]
  instructions: You track customer orders with the logistics tools.
  limits: {maxTurns: 5, deadline: 1m}
`

// taskTour runs a hosted agent's task as 'corral run' shows it: every
// model and tool call a journaled step through the pipeline.
func taskTour(ctx context.Context, s streams, c *client, step func(int, string)) error {
	step(11, "corral run tracker: a durable task; corral runs the hosted agent's loop, each step journaled before it acts")
	docs, err := config.Decode("tracker.yaml", []byte(trackerDocs))
	if err != nil {
		return err
	}
	if _, err := c.apply(ctx, docs); err != nil {
		return err
	}
	var t orchestrator.Task
	if err := c.do(ctx, "POST", "/v1/tasks", api.TaskRequest{Agent: "tracker", Input: json.RawMessage(`"where is order ORD-1001?"`)}, &t); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "  task %s: Agent/tracker\n", t.ID)
	view := &liveView{w: indent(s.out), r: newRenderer(100)}
	f := &follower{c: c.untimed(), id: t.ID, onEvent: view.show, note: view.note, retryWait: 250 * time.Millisecond, poll: 200 * time.Millisecond}
	done, err := f.follow(ctx)
	if err != nil {
		return err
	}
	if done.State != orchestrator.Completed {
		return fmt.Errorf("demo: the tracker's task ended %s %s: %s", done.State, done.Reason, done.Detail)
	}
	fmt.Fprintf(s.out, "  result: %s; %d model calls, %d tool call, each in the audit with its task and step\n", done.Result, done.Usage.ModelCalls, done.Usage.ToolCalls)
	return nil
}

// logisticsSource is the name the demo gives the logistics ToolSource.
const logisticsSource = "logistics"

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

// indent prefixes every line written to w with two spaces.
func indent(w io.Writer) io.Writer { return &indenter{w: w, start: true} }

type indenter struct {
	w     io.Writer
	start bool
}

func (i *indenter) Write(p []byte) (int, error) {
	for _, b := range p {
		if i.start {
			if _, err := i.w.Write([]byte("  ")); err != nil {
				return 0, err
			}
		}
		if _, err := i.w.Write([]byte{b}); err != nil {
			return 0, err
		}
		i.start = b == '\n'
	}
	return len(p), nil
}

// tokenResponse is the part of an RFC 6749 token response the demo shows.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
}

// clientCredentials trades an agent key for an access token, as an agent
// with an OAuth client library would.
func clientCredentials(ctx context.Context, base, agent, key string) (*tokenResponse, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(agent), url.QueryEscape(key))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("demo: /oauth2/token: %w", err)
	}
	defer resp.Body.Close()
	var out tokenResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("demo: /oauth2/token answered HTTP %d (%v)", resp.StatusCode, err)
	}
	return &out, nil
}
