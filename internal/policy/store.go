package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/corral-dev/corral/internal/config"
)

// Resources is what the store reads Policy resources from: the registry.
type Resources interface {
	List(kind string) []config.Resource
	// Changed returns a channel closed at the next change to any resource.
	Changed() <-chan struct{}
}

// StoreOptions configure a Store.
type StoreOptions struct {
	// Default is the bundle every policy adds to: nil means
	// DefaultModules(), a non-nil empty slice means none.
	Default []Module
	// Engine tunes the engines the store builds.
	Engine Options
	// OnError, when set, is told of every set of policies that failed to
	// compile (the caller counts them).
	OnError func(error)
}

// Reasons of an engine that has no policy to decide with.
const (
	reasonNotLoaded = "policy is not loaded yet"
	reasonFailed    = "policy failed to compile: an operator must fix the Policy resources"
)

// Store keeps the live engine, built from the default bundle and every
// Policy resource, and rebuilds it when they change. A set of policies
// that does not compile leaves the previous engine serving.
type Store struct {
	logger *slog.Logger
	res    Resources
	opts   StoreOptions

	engine atomic.Pointer[Engine]
	loaded chan struct{} // closed after Run's first Reload, whatever its outcome

	mu    sync.Mutex // serialises Reload
	built string     // revision of the last bundle compiled or tried
}

// NewStore returns a store whose engine denies everything until Run (or
// Reload) has compiled the policies once.
func NewStore(logger *slog.Logger, res Resources, opts StoreOptions) *Store {
	if opts.Default == nil {
		opts.Default = DefaultModules()
	}
	s := &Store{logger: logger, res: res, opts: opts, loaded: make(chan struct{})}
	s.engine.Store(unloadedEngine(reasonNotLoaded))
	return s
}

// Engine returns the engine to decide with now; never nil.
func (s *Store) Engine() *Engine { return s.engine.Load() }

// Run rebuilds the engine now and at every change of the resources, until
// ctx ends; it then returns nil. Failures are logged and passed to
// OnError: they never stop Run.
func (s *Store) Run(ctx context.Context) error {
	first := true
	for {
		changed := s.res.Changed()
		if err := s.Reload(ctx); err != nil && ctx.Err() == nil {
			s.logger.ErrorContext(ctx, "policies do not compile; the previous policy still decides",
				"err", err, "revision", s.Engine().Revision())
			if s.opts.OnError != nil {
				s.opts.OnError(err)
			}
		}
		if first {
			close(s.loaded)
			first = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// WaitLoaded returns once Run has tried to compile the policies, or with
// an error when ctx ends first. From then on Engine decides with them, or,
// if they never compiled, denies everything saying so (and the log says
// why): a broken policy does not keep corral from starting.
func (s *Store) WaitLoaded(ctx context.Context) error {
	select {
	case <-s.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("policy: waiting for policies to load: %w", ctx.Err())
	}
}

// Reload compiles the current Policy resources with the default bundle
// and, if they compile, makes them the live engine. It does nothing when
// they have not changed since the last call.
func (s *Store) Reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := s.bundle(s.res.List("Policy"))
	if err != nil {
		s.failed()
		return err
	}
	rev := revision(b)
	if rev == s.built {
		return nil
	}
	s.built = rev
	e, err := Compile(ctx, b, s.opts.Engine)
	if err != nil {
		s.failed()
		return err
	}
	prev := s.engine.Swap(e)
	s.logger.InfoContext(ctx, "policy loaded", "revision", e.Revision(), "previous", prev.Revision(), "modules", len(b.Modules))
	return nil
}

// failed marks an engine that never loaded as failed rather than loading.
func (s *Store) failed() {
	if e := s.engine.Load(); e.unloaded != "" {
		s.engine.Store(unloadedEngine(reasonFailed))
	}
}

// Check reports whether the live Policy resources, with candidate added or
// replacing the one of the same name, would compile: apply refuses a
// Policy that would not, with its *CompileError. It only computes (it
// takes no context): compiling a policy set takes milliseconds.
func (s *Store) Check(candidate config.Resource) error {
	ctx := context.Background()
	if candidate.Kind != "Policy" {
		return fmt.Errorf("policy: check %s: not a Policy", candidate.ID())
	}
	var set []config.Resource
	for _, r := range s.res.List("Policy") {
		if r.Metadata.Name != candidate.Metadata.Name {
			set = append(set, r)
		}
	}
	b, err := s.bundle(append(set, candidate))
	if err != nil {
		return err
	}
	_, err = Compile(ctx, b, s.opts.Engine)
	return err
}

// CheckDelete reports whether the live Policy resources without the one
// named name would still compile: a delete that would leave another
// policy calling a rule only the deleted one defined is refused, rather
// than leaving replicas on the previous policy and restarted ones on none.
func (s *Store) CheckDelete(name string) error {
	var set []config.Resource
	for _, r := range s.res.List("Policy") {
		if r.Metadata.Name != name {
			set = append(set, r)
		}
	}
	b, err := s.bundle(set)
	if err != nil {
		return err
	}
	_, err = Compile(context.Background(), b, s.opts.Engine)
	return err
}

// bundle joins the default modules and the policies' modules and data.
func (s *Store) bundle(policies []config.Resource) (Bundle, error) {
	b := Bundle{Modules: append([]Module(nil), s.opts.Default...)}
	owners := map[string]string{}
	var errs []error
	for _, r := range policies {
		spec, err := policySpec(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b.Modules = append(b.Modules, policyModules(r.Metadata.Name, spec)...)
		if err := mergeData(&b, owners, spec.Data, r.ID()); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return Bundle{}, joinCompileErrors(errs)
	}
	return b, nil
}

// joinCompileErrors gathers errors into one CompileError.
func joinCompileErrors(errs []error) error {
	ce := &CompileError{}
	for _, err := range errs {
		var c *CompileError
		if errors.As(err, &c) {
			ce.Errors = append(ce.Errors, c.Errors...)
		} else {
			ce.Errors = append(ce.Errors, err.Error())
		}
	}
	return ce
}
