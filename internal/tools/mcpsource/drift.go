package mcpsource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/tools"
)

// An MCP server's annotations are claims: a server that re-annotates
// delete_everything as read-only would escape a policy asking approval for
// destructive tools. So the tool list in force is pinned, and a later list
// with a new tool or a changed annotation is held back as drift, for a human
// to accept (`corral tools drift accept`), as OpenAPI documents are. Other
// changes (descriptions, schemas, tools removed) are followed live.

// Pins keeps, per tool source, the server's tool list in force (as the
// server sent it, before overrides), so that restarts and replicas compare
// new lists with the same one. The OpenAPI path's object store serves.
type Pins interface {
	Get(ctx context.Context, source string) (Pin, bool, error)
	Put(ctx context.Context, source string, pin Pin) error
}

// Pin is a tool list in force for a tool source.
type Pin struct {
	// Doc is the server's tools, as JSON.
	Doc []byte
	// Revision is the ToolSource revision it is in force for.
	Revision uint64
	// From is the server: its URL, or its command line.
	From string
}

// Options tune every source the factory builds.
type Options struct {
	// Pins, when set, keeps the tool list in force in the substrate;
	// without it each source takes the first list it sees as the one in
	// force (a restart or a new revision takes the server at its word
	// again).
	Pins Pins
	// OnDrift is told when a source first holds a list back.
	OnDrift func(d tools.Drift)
}

// Factory returns a tools.Factory for ToolSources with spec.mcp.
func Factory(opts Options) tools.Factory {
	return func(ctx context.Context, name string, spec *config.ToolSourceSpec, env tools.Env) (tools.Source, error) {
		return build(ctx, name, spec, env, opts)
	}
}

// listed is one tools/list answer: the server's tools, their JSON (what is
// pinned) and its digest.
type listed struct {
	raw    []*mcp.Tool
	doc    []byte
	digest string
}

func newListed(raw []*mcp.Tool) (listed, error) {
	doc, err := json.Marshal(raw)
	if err != nil {
		return listed{}, fmt.Errorf("tools/list: encode: %w", err)
	}
	sum := sha256.Sum256(doc)
	return listed{raw: raw, doc: doc, digest: "sha256:" + hex.EncodeToString(sum[:])}, nil
}

// inForce is the tool list agents are served, converted.
type inForce struct {
	tools  []tools.Tool
	digest string
}

// install decides what a new list does: the first one a source sees
// becomes the baseline (or the pin does); later ones are adopted unless
// they add tools or change annotations, which are held back unless the
// ToolSource adopts changes. It reports whether the tools in force changed.
func (s *Source) install(ctx context.Context, l listed) (bool, error) {
	next, err := s.convert(ctx, l.raw)
	if err != nil {
		return false, err
	}
	cur := s.force.Load()
	if cur == nil {
		return true, s.baseline(ctx, l, next)
	}
	if cur.digest == l.digest {
		s.drift.Store(nil)
		return false, nil
	}
	if !s.adoptChanges {
		if changes := tools.Reannotated(cur.tools, next); len(changes) > 0 {
			s.hold(ctx, cur, l.digest, changes)
			return false, nil
		}
	}
	if err := s.pin(ctx, l); err != nil {
		return false, err
	}
	s.adopt(next, l.digest)
	return !reflect.DeepEqual(cur.tools, next), nil
}

// baseline sets the first tools in force: without pins, the list itself;
// with pins, as restsource does with documents: the pin of this revision,
// or for a new revision the list if it is the one accepted, else the pin
// (checking the list against it); without a pin for this server, the list,
// pinned.
func (s *Source) baseline(ctx context.Context, l listed, next []tools.Tool) error {
	if s.pins == nil || s.adoptChanges {
		s.adopt(next, l.digest)
		return nil
	}
	p, ok, err := s.pins.Get(ctx, s.name)
	if err != nil {
		return fmt.Errorf("read pin: %w", err)
	}
	if !ok || p.From != s.from || (p.Revision != s.env.Revision && s.accepted(l.digest)) {
		if err := s.pin(ctx, l); err != nil {
			return err
		}
		s.adopt(next, l.digest)
		return nil
	}
	var raw []*mcp.Tool
	if err := json.Unmarshal(p.Doc, &raw); err != nil {
		return fmt.Errorf("pinned tool list: %w", err)
	}
	pinned, err := newListed(raw)
	if err != nil {
		return err
	}
	if p.Revision != s.env.Revision {
		p.Revision = s.env.Revision
		if err := s.pins.Put(ctx, s.name, p); err != nil {
			return fmt.Errorf("pin: %w", err)
		}
	}
	old, err := s.convert(ctx, raw)
	if err != nil {
		return err
	}
	s.adopt(old, pinned.digest)
	if pinned.digest != l.digest {
		_, err = s.install(ctx, l) // the list against the pin, as any later one
	}
	return err
}

// pin records l as the list in force, when pins are kept.
func (s *Source) pin(ctx context.Context, l listed) error {
	if s.pins == nil || s.adoptChanges {
		return nil
	}
	if err := s.pins.Put(ctx, s.name, Pin{Doc: l.doc, Revision: s.env.Revision, From: s.from}); err != nil {
		return fmt.Errorf("pin: %w", err) // adopt a list only once pinned, so replicas and restarts agree
	}
	return nil
}

func (s *Source) adopt(next []tools.Tool, digest string) {
	s.force.Store(&inForce{tools: next, digest: digest})
	s.drift.Store(nil)
}

// accepted reports whether digest is the list the ToolSource's
// AcceptDriftLabel names.
func (s *Source) accepted(digest string) bool {
	label := s.env.Labels[tools.AcceptDriftLabel]
	return label != "" && strings.HasPrefix(strings.TrimPrefix(digest, "sha256:"), label)
}

// hold reports a list held back, once per candidate.
func (s *Source) hold(ctx context.Context, cur *inForce, candidate string, changes []tools.Change) {
	if prev := s.drift.Load(); prev != nil && prev.Candidate == candidate {
		return
	}
	d := &tools.Drift{Source: s.name, Detected: time.Now().UTC(), From: s.from,
		InForce: cur.digest, Candidate: candidate, Changes: changes}
	s.drift.Store(d)
	s.log.WarnContext(ctx, "mcp server added tools or changed annotations; held back for review, the previous tools stay in force",
		"changes", len(changes), "candidate", candidate, "accept_with", "corral tools drift accept "+s.name)
	if s.onDrift != nil {
		s.onDrift(*d)
	}
}

// Drift returns the tool list held back, or nil.
func (s *Source) Drift() *tools.Drift { return s.drift.Load() }
