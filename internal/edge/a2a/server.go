// Package a2a is corral's A2A v1.0 edge (the JSON-RPC binding over HTTP):
// every hosted agent, and every remote A2A agent corral fronts, answers at
// /a2a/{agent}, its agent card at /a2a/{agent}/.well-known/agent-card.json.
// A2A tasks are corral tasks (internal/orchestrator): the same store,
// events, limits and approvals. It also carries corral's chain extension
// (the agents above a call, in message metadata) and delivers push
// notifications to webhooks that are not private addresses.
package a2a

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
)

// Tasks is the task service (orchestrator.Service).
type Tasks interface {
	Create(ctx context.Context, req orchestrator.Request) (*orchestrator.Task, bool, error)
	Get(ctx context.Context, id string) (*orchestrator.Task, error)
	List(f orchestrator.Filter) ([]*orchestrator.Task, bool)
	Cancel(ctx context.Context, id, by, detail string) (*orchestrator.Task, error)
	Message(ctx context.Context, id, text, key string) (*orchestrator.Task, error)
	Events(ctx context.Context, id string, after uint64, follow bool, fn func(orchestrator.Event) error) error
}

// Auth verifies agent credentials, keys and corral tokens (pipeline.Pipeline).
type Auth interface {
	Authenticate(credential string) (pipeline.Caller, error)
}

// Admins verifies the admin token (identity.Store).
type Admins interface {
	VerifyAdmin(token string) bool
}

// Resources reads resources (registry.Registry).
type Resources interface {
	Get(kind, name string) (config.Resource, bool)
	List(kind string) []config.Resource
}

// Options configure the edge.
type Options struct {
	// PublicURL is corral's URL as callers reach it, for the cards
	// (https://corral.example.com); empty: taken from each request.
	PublicURL string
	// Version is corral's version, the cards' version.
	Version string
}

// Server is the A2A edge.
type Server struct {
	logger    *slog.Logger
	tasks     Tasks
	auth      Auth
	admins    Admins
	resources Resources
	store     *Store
	push      *Pusher
	opts      Options
}

// New returns the A2A edge. push may be nil: the agents then declare no
// push notifications.
func New(logger *slog.Logger, tasks Tasks, auth Auth, admins Admins, resources Resources, store *Store, push *Pusher, opts Options) *Server {
	if opts.Version == "" {
		opts.Version = "dev"
	}
	return &Server{logger: logger, tasks: tasks, auth: auth, admins: admins, resources: resources, store: store, push: push, opts: opts}
}

// Register adds the edge's routes.
func (s *Server) Register(mux *http.ServeMux) {
	handle := func(h problem.HandlerFunc) http.Handler { return problem.Handle(s.logger, h) }
	mux.Handle("POST /a2a/{agent}", http.HandlerFunc(s.serveRPC))
	mux.Handle("GET /a2a/{agent}/.well-known/agent-card.json", handle(s.serveCard))
	mux.Handle("GET /a2a/{$}", handle(s.serveDirectory))
	mux.Handle("GET /a2a", handle(s.serveDirectory))
	mux.Handle("/a2a/{agent}", handle(problem.NotAllowed("POST")))
	mux.Handle("/a2a/{agent}/.well-known/agent-card.json", handle(problem.NotAllowed("GET")))
}

// actor is who calls: the admin, or an agent.
type actor struct {
	admin  bool
	caller pipeline.Caller
}

func (ac actor) by() string {
	if ac.admin {
		return "admin"
	}
	return "agent:" + ac.caller.Agent
}

// may reports whether the actor may see and act on t (as internal/api).
func (ac actor) may(t *orchestrator.Task) bool {
	return ac.admin || (t.Agent == ac.caller.Agent && (t.AgentUID == "" || ac.caller.AgentUID == "" || t.AgentUID == ac.caller.AgentUID))
}

// authenticate reads the bearer credential: the admin token, an agent key
// or a corral token.
func (s *Server) authenticate(r *http.Request) (actor, error) {
	token := identity.BearerToken(r)
	if token == "" {
		return actor{}, problem.New(http.StatusUnauthorized, problem.Unauthenticated, "send the admin token, or an agent key or corral token, as Authorization: Bearer <credential>")
	}
	if s.admins.VerifyAdmin(token) {
		return actor{admin: true}, nil
	}
	c, err := s.auth.Authenticate(token)
	if err != nil {
		return actor{}, err
	}
	if _, ok := s.resources.Get("Agent", c.Agent); !ok {
		return actor{}, problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the credential's agent "+c.Agent+" does not exist")
	}
	return actor{caller: c}, nil
}

// agent is the agent an /a2a/{agent} URL names, when it is an A2A agent:
// hosted, or a remote A2A agent corral fronts.
func (s *Server) agent(name string) (*config.AgentSpec, bool) {
	if !config.ValidName(name) {
		return nil, false
	}
	res, ok := s.resources.Get("Agent", name)
	if !ok {
		return nil, false
	}
	var spec config.AgentSpec
	if json.Unmarshal(res.Spec, &spec) != nil || !served(&spec) {
		return nil, false
	}
	return &spec, true
}

// served: corral answers for hosted agents and remote A2A agents; an
// external agent runs its own loop and is no A2A agent of corral's.
func served(spec *config.AgentSpec) bool { return spec.Hosted() || spec.A2A != nil }

// call is one JSON-RPC call's context.
type call struct {
	id    json.RawMessage
	agent string
	spec  *config.AgentSpec
	actor actor
	base  string // corral's URL, for cards
}

func (s *Server) serveRPC(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("A2A-Version", Version)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeRPC(w, nil, nil, rpcErr(codeInvalidRequest, problem.RequestTooLarge, fmt.Sprintf("the request is over the limit of %d bytes", maxBody)))
		return
	}
	req, rerr := decodeRequest(body)
	if rerr != nil {
		var id json.RawMessage
		if req != nil {
			id = req.ID
		}
		writeRPC(w, id, nil, rerr)
		return
	}
	if v := r.Header.Get("A2A-Version"); !supportedVersion(v) {
		if v == "" {
			v = "0.3 (no A2A-Version header)"
		}
		writeRPC(w, req.ID, nil, rpcErr(codeVersion, problem.InvalidRequest, fmt.Sprintf("A2A-Version %s is not supported: this agent speaks %s (send the header A2A-Version: %s)", truncate(v, 40), Version, Version)))
		return
	}
	ac, err := s.authenticate(r)
	if err != nil {
		e := toRPC(err)
		if e.status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="corral"`)
		}
		writeRPC(w, req.ID, nil, e)
		return
	}
	name := r.PathValue("agent")
	spec, ok := s.agent(name)
	if !ok {
		writeRPC(w, req.ID, nil, rpcErr(codeMethodNotFound, problem.ResourceNotFound, "no A2A agent "+truncate(name, 80)+" here: it must be a hosted agent (spec.model) or a remote A2A agent (spec.a2a)"))
		return
	}
	c := &call{id: req.ID, agent: name, spec: spec, actor: ac, base: s.baseURL(r)}
	ctx := r.Context()
	var result any
	switch req.Method {
	case "SendMessage":
		result, err = s.sendMessage(ctx, c, req.Params)
	case "SendStreamingMessage":
		s.sendStreamingMessage(ctx, w, c, req.Params)
		return
	case "SubscribeToTask":
		s.subscribe(ctx, w, c, req.Params)
		return
	case "GetTask":
		result, err = s.getTask(ctx, c, req.Params)
	case "ListTasks":
		result, err = s.listTasks(ctx, c, req.Params)
	case "CancelTask":
		result, err = s.cancelTask(ctx, c, req.Params)
	case "CreateTaskPushNotificationConfig":
		result, err = s.createPush(ctx, c, req.Params)
	case "GetTaskPushNotificationConfig":
		result, err = s.getPush(ctx, c, req.Params)
	case "ListTaskPushNotificationConfigs":
		result, err = s.listPush(ctx, c, req.Params)
	case "DeleteTaskPushNotificationConfig":
		result, err = s.deletePush(ctx, c, req.Params)
	case "GetExtendedAgentCard":
		result = s.card(c.base, name, spec, true)
	default:
		err = rpcErr(codeMethodNotFound, problem.InvalidRequest, "method "+truncate(req.Method, 80)+" not found: this agent speaks A2A "+Version+" (SendMessage, SendStreamingMessage, GetTask, ListTasks, CancelTask, SubscribeToTask, the TaskPushNotificationConfig methods, GetExtendedAgentCard)")
	}
	if err != nil {
		e := toRPC(err)
		if e.Code == codeInternal {
			s.logger.ErrorContext(ctx, "a2a call failed", "method", req.Method, "agent", name, "err", err)
		}
		writeRPC(w, req.ID, nil, e)
		return
	}
	writeRPC(w, req.ID, result, nil)
}

// supportedVersion accepts 1.0 (a patch number, which clients should not
// send, is ignored).
func supportedVersion(v string) bool {
	v = strings.TrimSpace(v)
	return v == Version || strings.HasPrefix(v, Version+".")
}

func writeRPC(w http.ResponseWriter, id json.RawMessage, result any, e *rpcError) {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	resp := response{JSONRPC: "2.0", ID: id}
	status := http.StatusOK
	if e != nil {
		resp.Error = e
		if e.status != 0 {
			status = e.status
		}
	} else {
		if result == nil {
			result = struct{}{}
		}
		resp.Result = result
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}

// baseURL is corral's URL as the caller reached it.
func (s *Server) baseURL(r *http.Request) string {
	if s.opts.PublicURL != "" {
		return strings.TrimRight(s.opts.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
