package mcpedge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/telemetry"
	"github.com/corral-dev/corral/internal/tools"
)

// callResult is a tools/call result as it goes on the wire. The SDK's
// CallToolResult holds content as typed values and refuses block types it
// does not know; a gateway passes an upstream's blocks on as they came.
type callResult struct {
	mcp.ResultBase
	Content           []json.RawMessage `json:"content"`
	StructuredContent json.RawMessage   `json:"structuredContent,omitempty"`
	IsError           bool              `json:"isError,omitempty"`
	// ResultType is "complete" for clients that require it (listResult).
	ResultType string `json:"resultType,omitempty"`
}

// Problem is the value of _meta["dev.corral/problem"] on a refused or
// failed call: the fields of the problem+json document the REST edge would
// have answered. Clients branch on Code.
type Problem struct {
	Code    string `json:"code"`
	Detail  string `json:"detail"`
	Status  int    `json:"status"`
	AuditID string `json:"audit_id,omitempty"`
	Errors  any    `json:"errors,omitempty"`
	// ApprovalID names the approval a parked call awaits (code
	// approval_pending): the same call after it is approved runs.
	ApprovalID string `json:"approval_id,omitempty"`
}

// callTool runs tools/call through the pipeline. Every name goes to the
// pipeline, known or not, so that every attempt is audited and refused with
// a stable code.
func (e *Edge) callTool(ctx context.Context, r *request, req *mcp.CallToolRequest) (mcp.Result, error) {
	p := req.Params
	if p == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "tools/call needs params"}
	}
	key, err := idempotencyKey(p.Meta)
	if err != nil {
		return nil, err
	}
	if e.approvals != nil && p.Name == ApprovalStatusTool {
		return e.approvalStatus(ctx, r, p.Arguments), nil
	}
	target := p.Name
	if r.source != "" {
		target = r.source + "." + p.Name
	}
	select {
	case r.calls <- struct{}{}:
		defer func() { <-r.calls }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	out, err := e.gw.Invoke(ctx, pipeline.Action{
		// The bearer token, not the caller authenticated by ServeHTTP: the
		// pipeline checks it again, so a key revoked mid-session stops here.
		Credential:     r.credential,
		Kind:           "tool",
		Target:         target,
		Arguments:      p.Arguments,
		IdempotencyKey: key,
		Edge:           "mcp",
		RequestID:      telemetry.RequestID(ctx),
		RemoteAddr:     r.remote,
	})
	if err != nil {
		e.logProblem(ctx, "tools/call", err)
		res := refusal(pipeline.Hide(ctx, e.gw, r.caller, target, err))
		if e.approvals != nil {
			res = withStatusHint(res)
		}
		return res, nil
	}
	return result(out), nil
}

// idempotencyKey reads _meta["dev.corral/idempotency-key"].
func idempotencyKey(meta mcp.Meta) (string, error) {
	v, ok := meta[MetaIdempotencyKey]
	if !ok || v == nil {
		return "", nil
	}
	key, ok := v.(string)
	if !ok {
		return "", &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: `_meta["` + MetaIdempotencyKey + `"] must be a string`}
	}
	return key, nil
}

// result renders what the tool answered. An MCP tool's content blocks go
// out as they came; any other answer becomes one text block holding it, as
// JSON (or the text itself when it is a string), so that clients that read
// only content see it. structuredContent is set when the answer is a JSON
// object, the only kind MCP allows there.
func result(out *pipeline.Outcome) *callResult {
	res := out.Result
	if res == nil {
		res = &tools.Result{}
	}
	r := &callResult{IsError: res.IsError, Content: res.Content}
	if len(r.Content) == 0 {
		r.Content = []json.RawMessage{}
		if len(res.Structured) > 0 {
			r.Content = append(r.Content, textBlock(asText(res.Structured)))
		}
	}
	if isObject(res.Structured) {
		r.StructuredContent = res.Structured
	}
	r.Meta = mcp.Meta{}
	if out.AuditID != "" {
		r.Meta[MetaAuditID] = out.AuditID
	}
	if out.Replayed {
		r.Meta[MetaReplayed] = true
	}
	return r
}

// refusal renders a refused or failed call as a tool error, so that the
// agent (and the model behind it) sees why and may correct itself, with
// the problem in _meta for code that branches on it.
func refusal(err error) *callResult {
	var pe *problem.Error
	if !errors.As(err, &pe) {
		pe = problem.Wrap(http.StatusInternalServerError, problem.Internal, "the call failed inside corral", err)
	}
	return &callResult{
		IsError: true,
		Content: []json.RawMessage{textBlock(pe.Code + ": " + pe.Detail)},
		ResultBase: mcp.ResultBase{Meta: mcp.Meta{MetaProblem: Problem{
			Code: pe.Code, Detail: pe.Detail, Status: pe.Status, AuditID: pe.AuditID, Errors: pe.Errors, ApprovalID: pe.ApprovalID,
		}}},
	}
}

// rpcError turns an error outside tools/call (tools/list failing) into a
// JSON-RPC error carrying the same problem as data.
func rpcError(err error) error {
	var pe *problem.Error
	if !errors.As(err, &pe) {
		pe = problem.Wrap(http.StatusInternalServerError, problem.Internal, "internal error", err)
	}
	data, _ := json.Marshal(Problem{Code: pe.Code, Detail: pe.Detail, Status: pe.Status, AuditID: pe.AuditID, Errors: pe.Errors})
	code := int64(jsonrpc.CodeInternalError)
	if pe.Status < 500 {
		code = jsonrpc.CodeInvalidRequest
	}
	return &jsonrpc.Error{Code: code, Message: pe.Code + ": " + pe.Detail, Data: data}
}

// logProblem logs what the pipeline answered with as the REST edge's
// problem renderer would: internal failures loudly, upstream failures as
// warnings, refusals not at all (the audit has them).
func (e *Edge) logProblem(ctx context.Context, method string, err error) {
	var pe *problem.Error
	switch {
	case !errors.As(err, &pe) || pe.Code == problem.Internal:
		e.logger.ErrorContext(ctx, "mcp request failed", "method", method, "err", err)
	case pe.Status >= 500:
		e.logger.WarnContext(ctx, "mcp request failed upstream", "method", method, "code", pe.Code, "err", err)
	}
}

func textBlock(text string) json.RawMessage {
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}{"text", text})
	return b
}

// asText is a JSON value as text: a string as itself, anything else as JSON.
func asText(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

func isObject(v json.RawMessage) bool {
	v = bytes.TrimLeft(v, " \t\r\n")
	return len(v) > 0 && v[0] == '{'
}
