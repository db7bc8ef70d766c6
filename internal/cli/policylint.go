package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/edge/rest"
	"github.com/corral-dev/corral/internal/openapi"
	"github.com/corral-dev/corral/internal/policy"
)

// warnLint prints a warning for every rule that reads an argument no tool
// has (policy.Lint); it never fails the command.
func warnLint(w io.Writer, modules []policy.Module, schemas []json.RawMessage) {
	warnings, err := policy.Lint(modules, schemas)
	if err != nil {
		fmt.Fprintf(w, "warning: policy lint skipped: %v\n", err)
		return
	}
	for _, x := range warnings {
		fmt.Fprintf(w, "warning: %s\n", x)
	}
}

// serverSchemas returns the input schemas of every tool the server's
// catalogue holds (the admin's GET /v1/tools).
func serverSchemas(ctx context.Context, c *client) ([]json.RawMessage, error) {
	var list rest.ToolList
	if err := c.do(ctx, "GET", "/v1/tools", nil, &list); err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(list.Tools))
	for i, t := range list.Tools {
		out[i] = t.InputSchema
	}
	return out, nil
}

// lintApplied lints the Policy resources among docs against the server's
// catalogue, after they were applied.
func lintApplied(ctx context.Context, w io.Writer, c *client, docs []config.Document) {
	var modules []policy.Module
	for _, d := range docs {
		if d.Resource.Kind != "Policy" {
			continue
		}
		var spec config.PolicySpec
		if err := json.Unmarshal(d.Resource.Spec, &spec); err != nil {
			continue // the server validated it; nothing to lint here
		}
		for i, src := range spec.Rego {
			modules = append(modules, policy.Module{Name: fmt.Sprintf("%s: Policy/%s/%d.rego", d.Source, d.Resource.Metadata.Name, i), Source: src})
		}
	}
	if len(modules) == 0 {
		return
	}
	schemas, err := serverSchemas(ctx, c)
	if err != nil {
		fmt.Fprintf(w, "warning: policy lint skipped: listing the server's tools: %v\n", err)
		return
	}
	warnLint(w, modules, schemas)
}

// localSchemas returns the input schemas of the tools of the OpenAPI
// documents in paths (YAML or JSON files with a top-level openapi field),
// for linting without a server.
func localSchemas(paths []string) ([]json.RawMessage, error) {
	var out []json.RawMessage
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			switch strings.ToLower(filepath.Ext(p)) {
			case ".yaml", ".yml", ".json":
			default:
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, doc := range openAPIDocuments(p, data) {
				ops, err := openapi.Import("lint", doc, openapi.Options{Document: p})
				if err != nil {
					return fmt.Errorf("policy lint: %w", err)
				}
				for _, op := range ops {
					out = append(out, op.InputSchema)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// openAPIDocuments returns the OpenAPI documents a file holds: itself, if
// it is one, or the inline documents of its ToolSources (as `corral tools
// import openapi -o yaml` writes them). Files that are neither, or that do
// not decode, hold none.
func openAPIDocuments(path string, data []byte) [][]byte {
	if isOpenAPI(data) {
		return [][]byte{data}
	}
	if !bytes.Contains(data, []byte("ToolSource")) {
		return nil
	}
	docs, err := config.Decode(path, data)
	if err != nil {
		return nil
	}
	var out [][]byte
	for _, d := range docs {
		var spec config.ToolSourceSpec
		if d.Resource.Kind != "ToolSource" || json.Unmarshal(d.Resource.Spec, &spec) != nil {
			continue
		}
		if spec.OpenAPI != nil && spec.OpenAPI.Document != "" {
			out = append(out, []byte(spec.OpenAPI.Document))
		}
	}
	return out
}

// isOpenAPI reports whether a YAML or JSON file is an OpenAPI document: a
// mapping with an openapi field.
func isOpenAPI(data []byte) bool {
	var doc struct {
		OpenAPI any `yaml:"openapi"`
	}
	return yaml.Unmarshal(data, &doc) == nil && doc.OpenAPI != nil
}
