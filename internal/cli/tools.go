package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/edge/rest"
	"github.com/corral-dev/corral/internal/openapi"
	"github.com/corral-dev/corral/internal/tools"
	"github.com/corral-dev/corral/internal/tools/restsource"
)

func newTools(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tools",
		Short: "Import, list and describe the tools agents call through corral",
		Long: `Tools come from ToolSource resources: an HTTP API described by OpenAPI, or an
MCP server. Each tool is named <source>.<tool>. Agents may call the tools their
Agent resource lists in spec.tools (names or globs such as erp.*).`,
		Example: `  corral tools import openapi petstore.yaml --name petstore --base-url http://127.0.0.1:8080/v3 --apply
  corral tools list
  corral tools describe petstore.getPetById`,
	}
	cmd.AddCommand(newToolsImport(s), newToolsList(s), newToolsDescribe(s), newToolsDrift(s))
	return cmd
}

func newToolsImport(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "import",
		Short:   "Turn an API description into a ToolSource",
		Example: "  corral tools import openapi petstore.yaml --name petstore --base-url http://127.0.0.1:8080/v3",
	}
	cmd.AddCommand(newToolsImportOpenAPI(s))
	return cmd
}

func newToolsImportOpenAPI(s streams) *cobra.Command {
	var (
		cf      clientFlags
		name    string
		baseURL string
		apply   bool
	)
	cmd := &cobra.Command{
		Use:   "openapi FILE|URL --name NAME [--base-url URL] [--apply]",
		Short: "Import an OpenAPI 3.0 or 3.1 document as a ToolSource",
		Long: `Read an OpenAPI 3.0 or 3.1 document (JSON or YAML), check that every operation
becomes a tool, and show the tools: one per operation, named <NAME>.<operationId>.

Without --apply nothing is sent to the server: the command works offline and
prints the tools (-o table or json) or the ToolSource resource (-o yaml) to
save and apply later. With --apply it stores the ToolSource.

A FILE is sent inline in the resource (spec.openapi.document), so the server
need not read your disk. A URL is stored as spec.openapi.spec: the server reads
it and re-reads it to detect drift.`,
		Example: `  corral tools import openapi petstore.yaml --name petstore --base-url http://127.0.0.1:8080/v3
  corral tools import openapi petstore.yaml --name petstore -o yaml > petstore-source.yaml
  corral tools import openapi https://erp.internal/openapi.json --name erp --apply`,
		Args: cobra.ExactArgs(1),
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&name, "name", "", "the ToolSource's name: tools are called <name>.<operationId>")
	cmd.Flags().StringVar(&baseURL, "base-url", "", "where the API answers (default: the document's first server)")
	cmd.Flags().BoolVar(&apply, "apply", false, "store the ToolSource on the server")
	_ = cmd.MarkFlagRequired("name")
	output := outputFlag(cmd, "table", "json", "yaml")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if !config.ValidName(name) {
			return fmt.Errorf("--name %q is not a valid name: use lowercase letters, digits and '-', at most 63 characters", name)
		}
		res, ops, err := importOpenAPI(cmd.Context(), args[0], name, baseURL)
		if err != nil {
			return err
		}
		if apply {
			c, err := cf.client()
			if err != nil {
				return err
			}
			results, err := c.apply(cmd.Context(), []config.Document{{Source: args[0], Index: 1, Resource: res}})
			if err != nil {
				return err
			}
			for _, r := range results {
				fmt.Fprintf(s.err, "%s %s: %d tools\n", r.Resource.ID(), r.Result, len(ops))
			}
		}
		switch *output {
		case "yaml":
			return writeYAML(s.out, res)
		case "json":
			return writeJSON(s.out, rest.ToolList{Tools: ops})
		}
		return writeToolTable(s.out, ops)
	}
	return cmd
}

// importOpenAPI reads a document from a file or URL, imports it (so that
// every problem shows before anything is stored), and builds the ToolSource.
func importOpenAPI(ctx context.Context, where, name, baseURL string) (config.Resource, []tools.Tool, error) {
	src := &config.OpenAPISource{BaseURL: baseURL}
	isURL := strings.HasPrefix(where, "http://") || strings.HasPrefix(where, "https://")
	var data []byte
	if isURL {
		src.Spec = where
		var err error
		data, _, err = restsource.Read(ctx, &http.Client{Timeout: 30 * time.Second}, src)
		if err != nil {
			return config.Resource{}, nil, err
		}
	} else {
		var err error
		if data, err = os.ReadFile(where); err != nil {
			return config.Resource{}, nil, err
		}
		if len(data) > config.MaxResourceBytes-4096 {
			return config.Resource{}, nil, fmt.Errorf("%s is %d KiB; a document sent inline must stay under %d KiB: serve it over http(s) and import its URL",
				where, len(data)>>10, (config.MaxResourceBytes-4096)>>10)
		}
		src.Document = string(data)
	}
	if baseURL == "" {
		servers := openapi.Servers(data)
		if len(servers) == 0 || (!isURL && !isAbsURL(servers[0])) {
			return config.Resource{}, nil, fmt.Errorf("%s names no absolute server URL: pass --base-url", where)
		}
	}
	return toolSource(name, where, data, src)
}

// importOpenAPIData builds an inline ToolSource from a document in memory.
func importOpenAPIData(name string, data []byte, baseURL string) (config.Resource, []tools.Tool, error) {
	return toolSource(name, name, data, &config.OpenAPISource{Document: string(data), BaseURL: baseURL})
}

// toolSource imports data (so that every problem shows before anything is
// stored) and builds the ToolSource resource around src.
func toolSource(name, where string, data []byte, src *config.OpenAPISource) (config.Resource, []tools.Tool, error) {
	ops, err := openapi.Import(name, data, openapi.Options{Document: where})
	if err != nil {
		return config.Resource{}, nil, err
	}
	out := make([]tools.Tool, len(ops))
	for i := range ops {
		out[i] = restsource.Convert(name, &ops[i])
	}
	res, err := validResource("ToolSource", name, config.ToolSourceSpec{OpenAPI: src})
	if err != nil {
		return config.Resource{}, nil, err
	}
	return res, out, nil
}

// validResource builds a resource around spec and puts it through the same
// validation as apply, so that -o yaml prints what apply accepts.
func validResource(kind, name string, spec any) (config.Resource, error) {
	rawSpec, err := json.Marshal(spec)
	if err != nil {
		return config.Resource{}, err
	}
	raw, err := json.Marshal(config.Resource{APIVersion: config.APIVersion, Kind: kind, Metadata: config.Metadata{Name: name}, Spec: rawSpec})
	if err != nil {
		return config.Resource{}, err
	}
	var value any
	if err := json.Unmarshal(raw, &value); err != nil {
		return config.Resource{}, err
	}
	res, problems := config.Validate(value)
	if len(problems) > 0 {
		return config.Resource{}, config.Errors(problems)
	}
	return res, nil
}

func isAbsURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.IsAbs()
}

func newToolsList(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tools (the same as 'corral get tools')",
		Long: `List tools with their annotations. With the admin token every tool is listed
and tool sources that are not ready are reported; with an agent key
(--token corral_ak_...), the tools that agent may call.`,
		Example: "  corral tools list\n  corral tools list -o json | jq '.tools[].name'",
		Args:    cobra.NoArgs,
	}
	cf.register(cmd)
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return listTools(cmd.Context(), s, cf, *output)
	}
	return cmd
}

func listTools(ctx context.Context, s streams, cf clientFlags, output string) error {
	c, err := cf.client()
	if err != nil {
		return err
	}
	var list rest.ToolList
	if err := c.do(ctx, "GET", "/v1/tools", nil, &list); err != nil {
		return err
	}
	if output == "json" {
		return writeJSON(s.out, list)
	}
	for _, st := range list.Sources {
		if st.State != tools.Ready {
			fmt.Fprintf(s.err, "ToolSource/%s is %s: %s\n", st.Name, st.State, st.Error)
		}
	}
	if len(list.Tools) == 0 {
		fmt.Fprintln(s.err, "no tools")
		return nil
	}
	return writeToolTable(s.out, list.Tools)
}

func writeToolTable(w io.Writer, list []tools.Tool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tOPERATION\tANNOTATIONS\tDESCRIPTION")
	for _, t := range list {
		op := "mcp"
		if t.Method != "" {
			op = t.Method + " " + t.Path
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", oneLine(t.Name, 80), oneLine(op, 60), annotations(t.Annotations), oneLine(t.Description, 60))
	}
	return tw.Flush()
}

func annotations(a tools.Annotations) string {
	var out []string
	if a.ReadOnly {
		out = append(out, "read-only")
	}
	if a.Destructive {
		out = append(out, "destructive")
	}
	if a.Idempotent {
		out = append(out, "idempotent")
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}

func newToolsDescribe(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "describe NAME",
		Short:   "Show one tool: its description, annotations and schemas",
		Example: "  corral tools describe petstore.getPetById\n  corral tools describe petstore.addPet -o json | jq .inputSchema",
		Args:    cobra.ExactArgs(1),
	}
	cf.register(cmd)
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var t tools.Tool
		if err := c.do(cmd.Context(), "GET", "/v1/tools/"+url.PathEscape(args[0]), nil, &t); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, t)
		}
		fmt.Fprintf(s.out, "Name:         %s\nSource:       ToolSource/%s\n", t.Name, t.Source)
		if t.Method != "" {
			fmt.Fprintf(s.out, "Operation:    %s %s\n", t.Method, t.Path)
		}
		fmt.Fprintf(s.out, "Annotations:  %s\n", annotations(t.Annotations))
		if t.Description != "" {
			fmt.Fprintf(s.out, "Description:  %s\n", strings.ReplaceAll(strings.TrimSpace(t.Description), "\n", "\n              "))
		}
		fmt.Fprintln(s.out, "Input schema:")
		if err := writeIndentedJSON(s.out, t.InputSchema); err != nil {
			return err
		}
		if len(t.OutputSchema) > 0 {
			fmt.Fprintln(s.out, "Output schema:")
			return writeIndentedJSON(s.out, t.OutputSchema)
		}
		return nil
	}
	return cmd
}

func writeIndentedJSON(w io.Writer, raw json.RawMessage) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "  ", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "  %s\n", b)
	return err
}

func newToolsDrift(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "drift [accept SOURCE]",
		Short: "Show tool sources whose definition changed in ways that break callers",
		Long: `corral re-reads OpenAPI documents served from URLs every spec.refresh (5m by
default). A change that callers may ignore (a new operation, a new optional
field) is adopted. A change that would break them (an operation removed, a
required field added, a field removed or renamed, a type changed) is held
back: the previous tools stay in force, the change is listed here, counted in
corral_tool_drift and written to the audit log.

'corral tools drift accept SOURCE' takes the new definition into force on
every replica. So does applying a changed ToolSource.`,
		Example: "  corral tools drift\n  corral tools drift -o json\n  corral tools drift accept erp",
		Args:    cobra.NoArgs,
	}
	cf.register(cmd)
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var list rest.DriftList
		if err := c.do(cmd.Context(), "GET", "/v1/tools/drift", nil, &list); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, list)
		}
		if len(list.Drift) == 0 {
			fmt.Fprintln(s.err, "no drift: every tool source serves the definition in force")
			return nil
		}
		tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SOURCE\tTOOL\tCHANGE\tFIELD\tDETAIL")
		for _, d := range list.Drift {
			for _, ch := range d.Changes {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Source, ch.Tool, ch.Kind, orDash(ch.Pointer), oneLine(ch.Detail, 60))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(s.err, "the previous definitions stay in force; take a new one with: corral tools drift accept SOURCE")
		return nil
	}
	accept := &cobra.Command{
		Use:     "accept SOURCE",
		Short:   "Take a held-back definition into force",
		Example: "  corral tools drift accept erp",
		Args:    cobra.ExactArgs(1),
	}
	var acf clientFlags
	acf.register(accept)
	accept.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := acf.client()
		if err != nil {
			return err
		}
		var applied struct {
			Resource config.Resource `json:"resource"`
		}
		if err := c.do(cmd.Context(), "POST", "/v1/tools/drift/"+url.PathEscape(args[0])+"/accept", nil, &applied); err != nil {
			return err
		}
		fmt.Fprintf(s.out, "%s revision %d: the new definition goes into force on every replica\n", applied.Resource.ID(), applied.Resource.Metadata.Revision)
		return nil
	}
	cmd.AddCommand(accept)
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
