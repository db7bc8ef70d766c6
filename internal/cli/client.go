package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/registry"
)

// defaultTokenPath is where `corral up` writes the admin token: under
// CORRAL_DATA when that is set, else under the default ./.corral.
func defaultTokenPath() string {
	if dir := os.Getenv("CORRAL_DATA"); dir != "" {
		return filepath.Join(dir, identity.AdminTokenFile)
	}
	return filepath.Join(".corral", identity.AdminTokenFile)
}

// clientFlags say which server a command talks to and with which credential.
type clientFlags struct {
	server, token string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.server, "server", "http://127.0.0.1:7070", "corral server URL")
	cmd.Flags().StringVar(&f.token, "token", "", "admin token (default: read $CORRAL_DATA/admin.token or ./.corral/admin.token)")
}

// client calls a corral server's HTTP API.
type client struct {
	base  string
	token string
	http  *http.Client
}

// client resolves the token: --token or CORRAL_TOKEN, else the default file.
func (f *clientFlags) client() (*client, error) {
	token := f.token
	if token == "" {
		path := defaultTokenPath()
		t, err := identity.ReadToken(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no admin token: pass --token, set CORRAL_TOKEN, or run where %s exists (CORRAL_DATA names corral's data directory)", path)
		}
		if err != nil {
			return nil, err
		}
		token = t
	}
	return newClient(f.server, token), nil
}

func newClient(server, token string) *client {
	return &client{base: strings.TrimRight(server, "/"), token: token, http: &http.Client{Timeout: 60 * time.Second}}
}

// apply sends validated documents to POST /v1/apply. Problems the server
// finds are mapped back to the files and documents they came from.
func (c *client) apply(ctx context.Context, docs []config.Document) ([]registry.Applied, error) {
	var req api.ApplyRequest
	for _, d := range docs {
		raw, err := json.Marshal(d.Resource)
		if err != nil {
			return nil, err
		}
		req.Resources = append(req.Resources, raw)
	}
	var resp api.ApplyResponse
	if err := c.do(ctx, "POST", "/v1/apply", req, &resp); err != nil {
		return nil, notStored{locateApplyErrors(err, docs)}
	}
	return resp.Results, nil
}

// locateApplyErrors maps the server's per-resource problems, which count
// resources in request order, back to the files and documents they came from.
func locateApplyErrors(err error, docs []config.Document) error {
	var ae *apiError
	if !errors.As(err, &ae) || len(ae.fieldErrors) == 0 {
		return err
	}
	out := make(config.Errors, len(ae.fieldErrors))
	for i, fe := range ae.fieldErrors {
		if n := fe.Document - 1; n >= 0 && n < len(docs) {
			fe.Source, fe.Document = docs[n].Source, docs[n].Index
		}
		out[i] = fe
	}
	return out
}

// apiError is a problem+json answer from the server.
type apiError struct {
	problem.Details
	fieldErrors config.Errors
}

func (e *apiError) Error() string {
	msg := e.Detail
	if len(e.fieldErrors) > 1 {
		msg = e.fieldErrors.Error()
	}
	return fmt.Sprintf("%s (code %s, request %s)", msg, e.Code, e.RequestID)
}

// do sends a request and decodes a 2xx JSON answer into out; any other answer
// becomes an *apiError, or a plain error naming the status.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	return c.send(ctx, method, path, nil, body, out)
}

// unreachable is a request that got no answer: the server may or may not
// have acted on it.
type unreachable struct {
	base string
	err  error
}

func (e unreachable) Error() string {
	return fmt.Sprintf("cannot reach corral at %s (is `corral up` running? --server or CORRAL_SERVER names another): %v", e.base, e.err)
}
func (e unreachable) Unwrap() error { return e.err }

// send is do with extra request headers.
func (c *client) send(ctx context.Context, method, path string, header http.Header, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return fmt.Errorf("--server %q: %w", c.base, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return unreachable{c.base, err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	// A problem with 202 is a call parked for approval (approval_pending).
	if resp.StatusCode >= 300 || strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		return decodeProblem(resp, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

func decodeProblem(resp *http.Response, data []byte) error {
	var p struct {
		problem.Details
		Errors config.Errors `json:"errors"`
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") || json.Unmarshal(data, &p) != nil {
		return fmt.Errorf("server answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	return &apiError{Details: p.Details, fieldErrors: p.Errors}
}
