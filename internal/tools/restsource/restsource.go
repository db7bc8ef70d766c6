// Package restsource is the tool source for HTTP APIs described by OpenAPI:
// it reads the document (a file, a URL or inline), turns each operation into
// a tool with internal/openapi, and calls the API through internal/upstream,
// adding the credentials agents never see.
package restsource

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/openapi"
	"github.com/corral-dev/corral/internal/tools"
	"github.com/corral-dev/corral/internal/upstream"
)

// maxDocument caps an OpenAPI document read from a file or URL.
const maxDocument = 32 << 20

// Pins keeps, per tool source, the document its tools were built from, so
// that a restarted replica serves the same tools while a newer document that
// would break callers is held back.
type Pins interface {
	Get(ctx context.Context, source string) (Pin, bool, error)
	Put(ctx context.Context, source string, pin Pin) error
}

// Pin is the document in force for a tool source.
type Pin struct {
	Doc []byte
	// Revision is the ToolSource revision it is in force for.
	Revision uint64
	// From is the URL it was read from.
	From string
	// Targets binds each override of the ToolSource to the operation it
	// was first applied to (openapi.Options.Targets): a document that
	// re-points the operationId, once accepted, does not carry it over.
	Targets map[string]string
}

// Options tune every source the factory builds.
type Options struct {
	// Pins, when set, pins documents read from URLs; without it a source
	// adopts whatever its URL serves at each start.
	Pins Pins
	// OnDrift is told when a source first holds a newer document back.
	OnDrift func(d tools.Drift)
	// OnBreakerChange is told when an upstream's breaker changes state.
	OnBreakerChange func(source string, from, to upstream.State)
	// HTTPClient fetches documents from URLs; default one with a 30 s timeout.
	HTTPClient *http.Client
}

// Factory returns a tools.Factory for ToolSources with spec.openapi.
func Factory(opts Options) tools.Factory {
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	return func(ctx context.Context, name string, spec *config.ToolSourceSpec, env tools.Env) (tools.Source, error) {
		return New(ctx, name, spec, env, opts)
	}
}

// Source is one OpenAPI-described API.
type Source struct {
	name   string
	spec   *config.ToolSourceSpec
	env    tools.Env
	opts   Options
	client *upstream.Client

	state atomic.Pointer[state] // the tools in force
	drift atomic.Pointer[tools.Drift]

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	// life ends with Close, cutting short a document being re-read.
	life    context.Context
	endLife context.CancelFunc
}

// state is one document's tools; replaced whole when the document changes.
type state struct {
	baseURL string
	tools   []tools.Tool
	ops     map[string]*openapi.Tool // by tool name
	digest  string
	// targets are the overrides' bindings in force (Pin.Targets).
	targets map[string]string
}

var (
	_ tools.Source  = (*Source)(nil)
	_ tools.Drifter = (*Source)(nil)
)

// New reads the document and builds the source.
func New(ctx context.Context, name string, spec *config.ToolSourceSpec, env tools.Env, opts Options) (*Source, error) {
	if spec.OpenAPI == nil {
		return nil, errors.New("restsource: the ToolSource has no spec.openapi")
	}
	s := &Source{name: name, spec: spec, env: env, opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	if err := s.load(ctx); err != nil {
		return nil, err
	}
	var onChange func(string, upstream.State, upstream.State)
	if opts.OnBreakerChange != nil {
		onChange = func(n string, from, to upstream.State) { opts.OnBreakerChange(n, from, to) }
	}
	s.client = upstream.New(upstream.Config{
		Name: name, Timeout: spec.TimeoutOrDefault(), OnBreakerChange: onChange,
		BreakerFailures: spec.Breaker.FailuresOrDefault(), BreakerCooldown: spec.Breaker.CooldownOrDefault(),
	})
	s.life, s.endLife = context.WithCancel(context.WithoutCancel(ctx))
	go s.refresh()
	return s, nil
}

// fromURL reports whether the document is read from a URL: only those are
// re-read and pinned.
func (s *Source) fromURL() bool {
	return s.spec.OpenAPI.Document == "" && isURL(s.spec.OpenAPI.Spec)
}

func isURL(s string) bool { return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") }

// load builds the tools in force at start. Documents read from a URL are
// pinned per ToolSource revision, so that restarts and replicas agree:
//   - the pin of this revision is served (and the URL's current document
//     checked for drift);
//   - a new revision of a source already pinned (an edit, or drift being
//     accepted) serves the URL's current document if it is the one accepted,
//     else the pinned one, checking the current one for drift as usual: an
//     edit never adopts a breaking change by the way;
//   - otherwise (a new source, a new URL) the current document is pinned.
//
// If the URL cannot be read, a pinned document is served.
func (s *Source) load(ctx context.Context) error {
	data, where, readErr := Read(ctx, s.opts.HTTPClient, s.spec.OpenAPI)
	if !s.fromURL() || s.opts.Pins == nil {
		if readErr != nil {
			return readErr
		}
		return s.adopt(ctx, data, where, false, nil)
	}
	pin, ok, err := s.opts.Pins.Get(ctx, s.name)
	if err != nil {
		return fmt.Errorf("restsource: read pin: %w", err)
	}
	if !ok || pin.From != s.spec.OpenAPI.Spec {
		if readErr != nil {
			return readErr
		}
		return s.adopt(ctx, data, where, true, nil)
	}
	if pin.Revision != s.env.Revision && readErr == nil && s.accepted(data) {
		return s.adopt(ctx, data, where, true, pin.Targets)
	}
	st, err := s.build(pin.Doc, where+" (pinned)", pin.Targets)
	if err != nil {
		return err
	}
	if pin.Revision != s.env.Revision {
		pin.Revision, pin.Targets = s.env.Revision, st.targets
		if err := s.opts.Pins.Put(ctx, s.name, pin); err != nil {
			return fmt.Errorf("restsource: pin: %w", err)
		}
	}
	s.state.Store(st)
	if readErr != nil {
		s.env.Logger.WarnContext(ctx, "serving the pinned document: its URL cannot be read", "err", readErr)
		return nil
	}
	s.check(ctx, data, where)
	return nil
}

// accepted reports whether data is the definition the ToolSource's
// AcceptDriftLabel names.
func (s *Source) accepted(data []byte) bool {
	label := s.env.Labels[tools.AcceptDriftLabel]
	return label != "" && strings.HasPrefix(strings.TrimPrefix(digest(data), "sha256:"), label)
}

// adopt puts a document into force, pinned if pin is set, its overrides
// bound as targets says.
func (s *Source) adopt(ctx context.Context, data []byte, where string, pin bool, targets map[string]string) error {
	st, err := s.build(data, where, targets)
	if err != nil {
		return err
	}
	if pin {
		if err := s.opts.Pins.Put(ctx, s.name, Pin{Doc: data, Revision: s.env.Revision, From: s.spec.OpenAPI.Spec, Targets: st.targets}); err != nil {
			return fmt.Errorf("restsource: pin: %w", err)
		}
	}
	s.state.Store(st)
	return nil
}

// build imports a document. An override bound to another operation
// (targets) is not applied; the others are bound to their operation.
func (s *Source) build(data []byte, where string, targets map[string]string) (*state, error) {
	ops, err := openapi.Import(s.name, data, openapi.Options{Document: where, Overrides: overrides(s.spec.Overrides),
		ReservedHeaders: s.ownHeaders(), Targets: targets})
	if err != nil {
		return nil, fmt.Errorf("restsource: %w", err)
	}
	base, err := baseURL(s.spec.OpenAPI, data)
	if err != nil {
		return nil, err
	}
	st := &state{baseURL: base, ops: make(map[string]*openapi.Tool, len(ops)), digest: digest(data)}
	for i := range ops {
		op := &ops[i]
		st.ops[op.Name] = op
		st.tools = append(st.tools, Convert(s.name, op))
		if _, ok := s.spec.Overrides[op.OperationID]; !ok {
			continue
		}
		if st.targets == nil {
			st.targets = map[string]string{}
		}
		at := openapi.Target(op.Method, op.Path)
		st.targets[op.OperationID] = at
		if t, bound := targets[op.OperationID]; bound && t != at {
			st.targets[op.OperationID] = t
			s.env.Logger.Warn("an override was written for another operation; not applied", "override", op.OperationID,
				"written_for", t, "operation", at, "rebind", "remove the override, apply, and add it again")
		}
	}
	return st, nil
}

// check compares a newly read document with the one in force: the same, or
// changed in ways callers may ignore, it is adopted (and pinned); changed in
// ways that would break callers, it is held back and reported as drift.
func (s *Source) check(ctx context.Context, data []byte, where string) {
	cur := s.state.Load()
	if digest(data) == cur.digest {
		s.drift.Store(nil)
		return
	}
	next, err := s.build(data, where, cur.targets)
	if err != nil {
		// A document that no longer imports breaks every caller.
		s.hold(ctx, digest(data), []tools.Change{{Kind: tools.OperationRemoved, Detail: "the new document cannot be imported: " + err.Error()}})
		return
	}
	if changes := breaking(cur, next, s.spec.Overrides); len(changes) > 0 {
		s.hold(ctx, next.digest, changes)
		return
	}
	if s.opts.Pins != nil {
		if err := s.opts.Pins.Put(ctx, s.name, Pin{Doc: data, Revision: s.env.Revision, From: s.spec.OpenAPI.Spec, Targets: next.targets}); err != nil {
			s.env.Logger.WarnContext(ctx, "pinning the new document", "err", err)
			return // adopt it only once pinned, so replicas and restarts agree
		}
	}
	s.state.Store(next)
	s.drift.Store(nil)
	s.env.Logger.InfoContext(ctx, "tool source document changed compatibly; adopted", "tools", len(next.tools))
	if s.env.Changed != nil {
		s.env.Changed()
	}
}

// ownHeaders are the headers this source sets on every call besides
// openapi.OwnHeaders: the identity header and an API key's header. No tool
// argument may fill them in.
func (s *Source) ownHeaders() []string {
	var out []string
	if s.spec.Identity.Enabled() {
		out = append(out, s.spec.Identity.HeaderOr())
	}
	if a := s.spec.Auth; a != nil && a.APIKey != nil {
		out = append(out, a.APIKey.Header)
	}
	return out
}

// breaking lists what in next would break callers or move their calls:
// a change of the base URL is one, as the credentials would follow it to a
// host nobody reviewed; so is a tool re-pointed at another operation, an
// argument sent elsewhere, or a tool's annotations changed, as grants,
// scopes and rules written for the tool would then authorise something else.
func breaking(cur, next *state, overrides map[string]config.ToolOverride) []tools.Change {
	changes := tools.Breaking(cur.tools, next.tools)
	changes = append(changes, retargeted(cur, next, overrides)...)
	for _, c := range tools.Reannotated(cur.tools, next.tools) {
		if c.Kind == tools.AnnotationChanged {
			changes = append(changes, c)
		}
	}
	if next.baseURL != cur.baseURL {
		changes = append([]tools.Change{{Kind: tools.ServerChanged,
			Detail: fmt.Sprintf("calls and credentials would go to %s instead of %s", next.baseURL, cur.baseURL)}}, changes...)
	}
	return changes
}

// retargeted lists the tools of cur that next would point at another
// operation, and the arguments it would send to another place. An override
// of the tool's annotations was written for the operation in force: the
// change says so, and that accepting it leaves the override behind.
func retargeted(cur, next *state, overrides map[string]config.ToolOverride) []tools.Change {
	var out []tools.Change
	for _, t := range cur.tools {
		o, n := cur.ops[t.Name], next.ops[t.Name]
		if o == nil || n == nil {
			continue // a removed tool is reported by tools.Breaking
		}
		if o.Method != n.Method || o.Path != n.Path {
			detail := fmt.Sprintf("the tool would call %s %s instead of %s %s", n.Method, n.Path, o.Method, o.Path)
			if _, ok := overrides[o.OperationID]; ok {
				detail += fmt.Sprintf("; overrides.%s was written for %s %s and will not apply to the new operation (remove it and add it again to bind it there)", o.OperationID, o.Method, o.Path)
			}
			out = append(out, tools.Change{Tool: t.Name, Kind: tools.OperationChanged, Detail: detail})
			continue
		}
		moved := make(map[string]openapi.Param, len(n.Params))
		for _, p := range n.Params {
			moved[p.Property] = p
		}
		for _, p := range o.Params {
			np, ok := moved[p.Property]
			if ok && (np.In != p.In || np.Name != p.Name) {
				out = append(out, tools.Change{Tool: t.Name, Kind: tools.OperationChanged, Pointer: "/" + pointerEscaper.Replace(p.Property),
					Detail: fmt.Sprintf("the argument would go to %s instead of %s", where(np), where(p))})
			}
		}
	}
	return out
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// where names a Param's place in the request: "query amount", "body".
func where(p openapi.Param) string {
	if p.Name == "" {
		return p.In
	}
	return p.In + " " + p.Name
}

func (s *Source) hold(ctx context.Context, candidate string, changes []tools.Change) {
	if prev := s.drift.Load(); prev != nil && prev.Candidate == candidate {
		return // reported already
	}
	d := &tools.Drift{Source: s.name, Detected: time.Now().UTC(), From: s.spec.OpenAPI.Spec,
		InForce: s.state.Load().digest, Candidate: candidate, Changes: changes}
	s.drift.Store(d)
	s.env.Logger.WarnContext(ctx, "tool source drifted in ways that break callers; the previous tools stay in force",
		"changes", len(changes), "candidate", candidate, "accept_with", "corral tools drift accept "+s.name)
	if s.opts.OnDrift != nil {
		s.opts.OnDrift(*d)
	}
}

// Drift returns the newer document held back, or nil.
func (s *Source) Drift() *tools.Drift { return s.drift.Load() }

// refresh re-reads a URL document every spec.refresh until Close.
func (s *Source) refresh() {
	defer close(s.done)
	every := s.spec.RefreshOrDefault()
	if !s.fromURL() || every <= 0 {
		<-s.stop
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.life, time.Minute)
		data, where, err := Read(ctx, s.opts.HTTPClient, s.spec.OpenAPI)
		if err != nil {
			s.env.Logger.WarnContext(ctx, "re-reading the tool source's document", "err", err)
		} else {
			s.check(ctx, data, where)
		}
		cancel()
	}
}

// Convert turns an imported operation into the catalogue's Tool.
func Convert(source string, op *openapi.Tool) tools.Tool {
	return tools.Tool{
		Name:         op.Name,
		Source:       source,
		Description:  op.Description,
		InputSchema:  op.InputSchema,
		OutputSchema: op.OutputSchema,
		Annotations: tools.Annotations{
			ReadOnly:    op.Annotations.ReadOnly,
			Destructive: op.Annotations.Destructive,
			Idempotent:  op.Annotations.Idempotent,
		},
		Method: op.Method,
		Path:   op.Path,
	}
}

func overrides(in map[string]config.ToolOverride) map[string]openapi.Override {
	if len(in) == 0 {
		return nil
	}
	out := make(map[string]openapi.Override, len(in))
	for k, o := range in {
		out[k] = openapi.Override{ReadOnly: o.ReadOnly, Destructive: o.Destructive, Idempotent: o.Idempotent}
	}
	return out
}

// Read returns the document a spec.openapi names, and where it came from
// (for messages): inline, from an http(s) URL, or from a file.
func Read(ctx context.Context, client *http.Client, src *config.OpenAPISource) ([]byte, string, error) {
	switch {
	case src.Document != "":
		return []byte(src.Document), "spec.openapi.document", nil
	case strings.HasPrefix(src.Spec, "http://") || strings.HasPrefix(src.Spec, "https://"):
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.Spec, nil)
		if err != nil {
			return nil, src.Spec, fmt.Errorf("restsource: spec.openapi.spec: %w", err)
		}
		req.Header.Set("Accept", "application/json, application/yaml;q=0.9, */*;q=0.5")
		resp, err := client.Do(req)
		if err != nil {
			return nil, src.Spec, fmt.Errorf("restsource: read %s: %w", src.Spec, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, src.Spec, fmt.Errorf("restsource: read %s: HTTP %d", src.Spec, resp.StatusCode)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
		if err != nil {
			return nil, src.Spec, fmt.Errorf("restsource: read %s: %w", src.Spec, err)
		}
		if len(data) > maxDocument {
			return nil, src.Spec, fmt.Errorf("restsource: read %s: larger than %d MiB", src.Spec, maxDocument>>20)
		}
		return data, src.Spec, nil
	default:
		f, err := os.Open(src.Spec)
		if err != nil {
			return nil, src.Spec, fmt.Errorf("restsource: spec.openapi.spec: %w (a path is read by the server, relative to its working directory)", err)
		}
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, maxDocument+1))
		if err != nil {
			return nil, src.Spec, fmt.Errorf("restsource: read %s: %w", src.Spec, err)
		}
		if len(data) > maxDocument {
			return nil, src.Spec, fmt.Errorf("restsource: %s is larger than %d MiB", src.Spec, maxDocument>>20)
		}
		return data, src.Spec, nil
	}
}

// baseURL is spec.openapi.baseURL, or the document's first server resolved
// against the document's URL.
func baseURL(src *config.OpenAPISource, data []byte) (string, error) {
	if src.BaseURL != "" {
		return src.BaseURL, nil
	}
	servers := openapi.Servers(data)
	if len(servers) == 0 {
		return "", errors.New("restsource: the document lists no servers: set spec.openapi.baseURL")
	}
	u, err := url.Parse(servers[0])
	if err != nil {
		return "", fmt.Errorf("restsource: the document's server %q: %w", servers[0], err)
	}
	if u.IsAbs() {
		return u.String(), nil
	}
	if !strings.HasPrefix(src.Spec, "http://") && !strings.HasPrefix(src.Spec, "https://") {
		return "", fmt.Errorf("restsource: the document's server %q is relative: set spec.openapi.baseURL", servers[0])
	}
	doc, err := url.Parse(src.Spec)
	if err != nil {
		return "", fmt.Errorf("restsource: spec.openapi.spec: %w", err)
	}
	return doc.ResolveReference(u).String(), nil
}

// sameHost refuses a request whose scheme or host is not the base URL's:
// credentials go only to the host of the document in force, which an admin
// applied or accepted.
func sameHost(target, base string) error {
	t, err := url.Parse(target)
	if err != nil {
		return fmt.Errorf("%w: %v", openapi.ErrArguments, err)
	}
	b, err := url.Parse(base)
	if err != nil || t.Scheme != b.Scheme || t.Host != b.Host {
		return fmt.Errorf("%w: the request would leave %s", openapi.ErrArguments, base)
	}
	return nil
}

// Tools returns the API's operations as tools.
func (s *Source) Tools() []tools.Tool { return s.state.Load().tools }

// Call builds the HTTP request for the operation and sends it.
func (s *Source) Call(ctx context.Context, c tools.Call) (*tools.Result, error) {
	st := s.state.Load()
	op, ok := st.ops[c.Tool.Name]
	if !ok {
		return nil, fmt.Errorf("restsource: %s has no operation %s", s.name, c.Tool.Name)
	}
	var req *openapi.Request
	var err error
	if args, ok := c.Value.(map[string]any); ok {
		req, err = openapi.BuildValue(op, st.baseURL, args)
	} else {
		req, err = openapi.Build(op, st.baseURL, c.Arguments)
	}
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json, */*;q=0.5")
	if c.IdempotencyKey != "" {
		req.Header.Set("Idempotency-Key", c.IdempotencyKey)
	}
	if c.Identity != "" && s.spec.Identity.Enabled() {
		if h := s.spec.Identity.HeaderOr(); strings.EqualFold(h, "Authorization") {
			req.Header.Set(h, "Bearer "+c.Identity)
		} else {
			req.Header.Set(h, c.Identity)
		}
	}
	if err := sameHost(req.URL, st.baseURL); err != nil {
		return nil, err
	}
	if err := s.authenticate(ctx, req.Header); err != nil {
		return nil, err
	}
	resp, err := s.client.Do(ctx, upstream.Request{
		Method: req.Method, URL: req.URL, Header: req.Header, Body: req.Body,
		Idempotent: c.Tool.Annotations.Idempotent,
	})
	if err != nil {
		return nil, err
	}
	return result(resp)
}

func (s *Source) authenticate(ctx context.Context, h http.Header) error {
	a := s.spec.Auth
	if a == nil {
		return nil
	}
	resolve := func(ref config.SecretValue) (string, error) {
		v, err := s.env.Secret(ctx, ref)
		if err != nil {
			return "", fmt.Errorf("%w: %w", tools.ErrCredentials, err)
		}
		return v, nil
	}
	switch {
	case a.Bearer != nil:
		v, err := resolve(*a.Bearer)
		if err != nil {
			return err
		}
		h.Set("Authorization", "Bearer "+v)
	case a.APIKey != nil:
		v, err := resolve(a.APIKey.Value)
		if err != nil {
			return err
		}
		h.Set(a.APIKey.Header, v)
	case a.Basic != nil:
		v, err := resolve(a.Basic.Password)
		if err != nil {
			return err
		}
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(a.Basic.Username+":"+v)))
	}
	return nil
}

// result turns an HTTP answer into a tool result: JSON as it is, text as a
// JSON string, anything else base64-encoded in a JSON string.
func result(resp *upstream.Response) (*tools.Result, error) {
	res := &tools.Result{Status: resp.Status, Size: len(resp.Body), IsError: resp.Status >= 400}
	if resp.Status == http.StatusTooManyRequests || resp.Status == http.StatusServiceUnavailable {
		res.RetryAfter = upstream.RetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	res.ContentType = mediaType
	body := bytes.TrimSpace(resp.Body)
	switch {
	case len(body) == 0:
		res.Structured = json.RawMessage("null")
	case mediaType == "application/json" || strings.HasSuffix(mediaType, "+json"):
		if !json.Valid(body) {
			if res.IsError {
				res.Structured, _ = json.Marshal(string(resp.Body))
				return res, nil
			}
			return nil, fmt.Errorf("%w: the upstream said %s but sent no valid JSON", tools.ErrInvalidAnswer, mediaType)
		}
		res.Structured = json.RawMessage(body)
	case mediaType == "" || strings.HasPrefix(mediaType, "text/") || strings.HasSuffix(mediaType, "+xml") || mediaType == "application/xml":
		res.Structured, _ = json.Marshal(string(resp.Body))
	default:
		res.Structured, _ = json.Marshal(base64.StdEncoding.EncodeToString(resp.Body))
	}
	return res, nil
}

// Close stops re-reading the document and releases idle connections.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		s.endLife()
		close(s.stop)
		<-s.done
		s.client.Close()
	})
	return nil
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}
