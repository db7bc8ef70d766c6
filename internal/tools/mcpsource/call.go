package mcpsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/tools"
	"github.com/corral-dev/corral/internal/upstream"
)

// IdempotencyKeyMeta is the tools/call _meta key that carries
// tools.Call.IdempotencyKey. MCP has no standard field for it; a server
// that deduplicates calls can read it from the request's _meta.
const IdempotencyKeyMeta = "dev.corral/idempotency-key"

// IdentityMeta is the tools/call _meta key that carries tools.Call.Identity,
// the corral-signed token saying who acts. Over HTTP it also goes in the
// header spec.identity names; over stdio _meta is the only way.
const IdentityMeta = "dev.corral/identity"

// errAttemptTimeout is the cause of an attempt's context when the source's
// own timeout ended it, as opposed to the caller's context.
var errAttemptTimeout = errors.New("mcp attempt timed out")

// Call calls the tool with tools/call. It does not retry, since an MCP tool
// is not known to be safe to repeat, except once on a new session when the
// old one was lost (the server restarted, its process exited) and either
// the tool is annotated idempotent or read-only, or the request provably
// never reached the server (HTTP 404 for the session, a broken stdin pipe).
func (s *Source) Call(ctx context.Context, c tools.Call) (*tools.Result, error) {
	if c.Tool == nil {
		return nil, fmt.Errorf("mcpsource: %s: call without a tool", s.name)
	}
	name, ok := strings.CutPrefix(c.Tool.Name, s.name+".")
	if !ok {
		return nil, fmt.Errorf("mcpsource: %s: tool %q is not from this source", s.name, c.Tool.Name)
	}
	retry := c.Tool.Annotations.Idempotent || c.Tool.Annotations.ReadOnly
	for attempt := 1; ; attempt++ {
		cs, _, err := s.current(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("mcpsource: call %s: %w", c.Tool.Name, ctx.Err())
			}
			return nil, fmt.Errorf("mcpsource: call %s: %w", c.Tool.Name, err)
		}
		res, err := s.callOnce(ctx, cs, name, c)
		if err == nil {
			return res, nil
		}
		if !s.lostSession(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("mcpsource: call %s: %w", c.Tool.Name, err)
		}
		s.drop(cs, err)
		if !(retry || s.undelivered(err)) || attempt > 1 {
			return nil, fmt.Errorf("mcpsource: call %s: %w: session lost: %v", c.Tool.Name, upstream.ErrUnavailable, err)
		}
		s.log.InfoContext(ctx, "mcp session lost during a call; retrying on a new session", "tool", c.Tool.Name)
	}
}

// callOnce makes one tools/call attempt and classifies its failure: the
// caller's cancellation as ctx.Err(), the source's timeout as
// upstream.ErrTimeout, a JSON-RPC error as tools.ErrInvalidAnswer, a lost
// session as itself (for Call to decide), the rest as
// upstream.ErrUnavailable.
func (s *Source) callOnce(ctx context.Context, cs *mcp.ClientSession, name string, c tools.Call) (*tools.Result, error) {
	params := &mcp.CallToolParams{Name: name}
	if len(c.Arguments) > 0 {
		params.Arguments = c.Arguments
	}
	if c.IdempotencyKey != "" || c.Identity != "" {
		params.Meta = mcp.Meta{}
	}
	if c.IdempotencyKey != "" {
		params.Meta[IdempotencyKeyMeta] = c.IdempotencyKey
	}
	if c.Identity != "" {
		params.Meta[IdentityMeta] = c.Identity
		ctx = withIdentity(ctx, c.Identity)
	}
	actx, cancel := context.WithTimeoutCause(ctx, s.timeout, errAttemptTimeout)
	defer cancel()
	res, err := cs.CallTool(actx, params)
	var rpcErr *jsonrpc.Error
	switch {
	case err == nil:
		return result(res)
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case context.Cause(actx) == errAttemptTimeout:
		return nil, fmt.Errorf("%w after %v", upstream.ErrTimeout, s.timeout)
	case s.lostSession(err):
		return nil, err
	case errors.As(err, &rpcErr):
		if tooLarge, ok := asTooLarge(rpcErr); ok {
			return nil, tooLarge
		}
		return nil, fmt.Errorf("%w: %s (code %d)", tools.ErrInvalidAnswer, rpcErr.Message, rpcErr.Code)
	default:
		return nil, fmt.Errorf("%w: %v", upstream.ErrUnavailable, err)
	}
}

// result converts an MCP result. The SDK has decoded it already, so the
// content blocks and Size come from encoding it again: the same JSON
// values, not necessarily the same bytes the server sent.
func result(res *mcp.CallToolResult) (*tools.Result, error) {
	out := &tools.Result{IsError: res.IsError, Content: make([]json.RawMessage, 0, len(res.Content))}
	for _, c := range res.Content {
		b, err := json.Marshal(c)
		if err != nil {
			return nil, fmt.Errorf("%w: content block: %v", tools.ErrInvalidAnswer, err)
		}
		out.Content = append(out.Content, b)
	}
	if res.StructuredContent != nil {
		b, err := json.Marshal(res.StructuredContent)
		if err != nil {
			return nil, fmt.Errorf("%w: structuredContent: %v", tools.ErrInvalidAnswer, err)
		}
		out.Structured = b
	}
	whole, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", tools.ErrInvalidAnswer, err)
	}
	out.Size = len(whole)
	return out, nil
}
