// Package mcpedge is the Model Context Protocol edge of the tool gateway:
// agents speak MCP's Streamable HTTP transport at /mcp, list the tools they
// may call and call them, and every call runs through the pipeline. Like the
// REST edge it translates and holds no policy of its own.
//
// The edge keeps no session state, so any replica can answer any request of
// a session: it runs the Go SDK's stateless Streamable HTTP mode, in which
// every POST is served by a temporary MCP session whose initialization is
// taken from the request (the MCP-Protocol-Version header), no
// Mcp-Session-Id is issued or read, and GET and DELETE answer 405. What
// would otherwise be session state (who the caller is, which tools it sees)
// is recomputed per request from the bearer token and the catalogue.
//
// tools/list and tools/call are answered by a receiving middleware in front
// of the SDK's own handlers, so the SDK's tool registry (which is empty)
// never rejects a name before the pipeline has seen and audited it.
package mcpedge

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/tools"
)

// The _meta keys corral reads and writes. MCP reserves no key for these, so
// they carry corral's reverse-DNS prefix.
const (
	// MetaIdempotencyKey in a tools/call request's _meta makes a retry of
	// the call return the recorded answer instead of calling the tool again
	// (the REST edge's Idempotency-Key header).
	MetaIdempotencyKey = "dev.corral/idempotency-key"
	// MetaProblem in a tool error's _meta says why corral refused or failed
	// the call: {"code", "detail", "status", "audit_id", "errors"}.
	MetaProblem = "dev.corral/problem"
	// MetaAuditID in a result's _meta names the call's audit record.
	MetaAuditID = "dev.corral/audit-id"
	// MetaReplayed in a result's _meta is true when the answer is the one
	// recorded for an earlier call with the same idempotency key.
	MetaReplayed = "dev.corral/replayed"
)

// MaxConcurrentCalls bounds the tools/call one MCP session (in stateless
// mode, one POST) runs at once: a JSON-RPC batch of thousands of calls,
// which protocol versions before 2025-06-18 allow, runs this many at a
// time, the rest waiting their turn.
const MaxConcurrentCalls = 16

// Gateway is what the edge needs from the pipeline.
type Gateway interface {
	Authenticate(credential string) (pipeline.Caller, error)
	Tools(ctx context.Context, c pipeline.Caller) ([]*tools.Entry, error)
	Invoke(ctx context.Context, a pipeline.Action) (*pipeline.Outcome, error)
}

// Edge serves MCP at /mcp (every tool the agent may call, named
// "<source>.<tool>") and /mcp/{source} (one source's tools under their
// upstream names).
type Edge struct {
	gw      Gateway
	logger  *slog.Logger
	handler http.Handler

	// lists caches the rendered tools/list per agent and endpoint; an entry
	// is reused while the pipeline returns the same catalogue entries.
	lists sync.Map // listKey -> *toolList

	// approvals, when set, answers ApprovalStatusTool, whose tools/list
	// entry statusTool is.
	approvals  Approvals
	statusTool json.RawMessage
}

// New returns the edge.
func New(logger *slog.Logger, gw Gateway) *Edge {
	e := &Edge{gw: gw, logger: logger}
	// One server serves every request: it has no tools of its own, and the
	// middleware answers the tool methods per caller.
	server := mcp.NewServer(&mcp.Implementation{Name: "corral", Title: "corral", Version: version()}, &mcp.ServerOptions{
		Logger: logger,
		// Tools only: corral forwards no logging, resources or prompts, and
		// cannot notify list changes without sessions.
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}},
		Instructions: "Tools governed by corral. A refused call is a tool error whose _meta[\"" + MetaProblem + "\"].code says why.",
	})
	server.AddReceivingMiddleware(e.middleware)
	e.handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
		Stateless: true,
		// Plain JSON answers: the edge sends no notifications during a call,
		// and a JSON body passes every proxy and load balancer unbuffered.
		JSONResponse: true,
		Logger:       logger,
		// The SDK's DNS-rebinding guard refuses loopback requests whose Host
		// is not loopback. It protects servers without authentication; every
		// request here needs an agent key a browser page does not have, and
		// the guard would refuse a reverse proxy on the same host that keeps
		// the public Host header.
		DisableLocalhostProtection:   true,
		PropagateRequestCancellation: true,
	})
	return e
}

// Register adds the edge's routes to mux.
func (e *Edge) Register(mux *http.ServeMux) {
	mux.Handle("/mcp", e)
	mux.Handle("/mcp/{source}", e)
}

// request is what the HTTP layer learned about a request, for the MCP
// handlers: the SDK hands the HTTP request's context values through to them.
type request struct {
	credential string
	caller     pipeline.Caller
	// source is set on /mcp/{source}: only that source's tools, under their
	// upstream names.
	source string
	remote string // the caller's address, for the audit
	// calls holds a token per tools/call running in this session.
	calls chan struct{}
}

type requestKey struct{}

// ServeHTTP authenticates the request and hands it to the MCP transport. A
// missing or invalid key is refused here, as HTTP 401 problem+json, before
// any MCP handling, so that clients see the standard authorization failure.
func (e *Edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	credential := identity.BearerToken(r)
	caller, err := e.gw.Authenticate(credential)
	if err != nil {
		problem.Write(w, r, e.logger, err)
		return
	}
	req := &request{credential: credential, caller: caller, source: r.PathValue("source"), remote: r.RemoteAddr,
		calls: make(chan struct{}, MaxConcurrentCalls)}
	e.handler.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestKey{}, req)))
}

// middleware answers tools/list and tools/call itself and leaves the rest
// (initialize, ping, ...) to the SDK.
func (e *Edge) middleware(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		switch method {
		case "tools/list", "tools/call":
		default:
			return next(ctx, method, req)
		}
		r, ok := ctx.Value(requestKey{}).(*request)
		if !ok {
			// Only reachable if the SDK stopped passing context values
			// through: fail closed rather than serve an unauthenticated call.
			e.logger.ErrorContext(ctx, "mcp request without its HTTP authentication", "method", method)
			return nil, rpcError(problem.New(http.StatusInternalServerError, problem.Internal, "the request lost its authentication inside corral"))
		}
		if method == "tools/list" {
			res, err := e.listTools(ctx, r)
			if lr, ok := res.(*listResult); ok && wantsResultType(req) {
				lr.ResultType, lr.TTLMs, lr.CacheScope = "complete", new(0), "private"
			}
			return res, err
		}
		call, ok := req.(*mcp.CallToolRequest)
		if !ok {
			return next(ctx, method, req)
		}
		res, err := e.callTool(ctx, r, call)
		if cr, ok := res.(*callResult); ok && wantsResultType(req) {
			cr.ResultType = "complete"
		}
		return res, err
	}
}

// version is the binary's module version, for serverInfo.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "dev"
}
