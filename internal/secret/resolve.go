package secret

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/corral-dev/corral/internal/config"
)

// Errors Resolve returns, wrapped with the name it looked for.
var (
	// ErrNotFound: no Secret resource has the name.
	ErrNotFound = errors.New("does not exist")
	// ErrNotSet: the environment variable is not set, or empty.
	ErrNotSet = errors.New("is not set")
)

// maxCache bounds the opened values a Resolver keeps. One entry per Secret
// name is the steady state; the bound only matters to a registry with more
// Secrets than that, where the cache is dropped and refilled.
const maxCache = 1024

// Resolver turns a credential reference from a ToolSource into its value:
// the opened value of a Secret resource, or an environment variable of the
// server. Its Resolve method is what tools.Env.Secret is. It is safe for
// concurrent use.
type Resolver struct {
	sealer *Sealer
	get    func(kind, name string) (config.Resource, bool)
	getenv func(string) (string, bool)

	mu    sync.RWMutex
	cache map[string]opened // by Secret name
}

// opened is a Secret's value, valid while the Secret's spec is still spec.
type opened struct {
	spec  string
	value string
}

// NewResolver returns a Resolver that finds Secrets with get (the registry's
// Get) and opens them with sealer, and reads the environment with getenv
// (os.LookupEnv when nil).
func NewResolver(sealer *Sealer, get func(kind, name string) (config.Resource, bool), getenv func(string) (string, bool)) *Resolver {
	if getenv == nil {
		getenv = os.LookupEnv
	}
	return &Resolver{sealer: sealer, get: get, getenv: getenv, cache: map[string]opened{}}
}

// Resolve returns the value ref names. It reads the current Secret on every
// call, so a rotated value applies at the next call; the cost of that is a
// map lookup, since values already opened are kept, each valid as long as
// the Secret's spec (which holds the sealed value) is byte for byte the same.
// Errors name the reference, never the value.
func (r *Resolver) Resolve(_ context.Context, ref config.SecretValue) (string, error) {
	switch {
	case ref.SecretRef != "" && ref.Env != "":
		return "", errors.New("secret: set only one of secretRef or env")
	case ref.Env != "":
		v, ok := r.getenv(ref.Env)
		if !ok || v == "" {
			return "", fmt.Errorf("environment variable %s %w", ref.Env, ErrNotSet)
		}
		return v, nil
	case ref.SecretRef == "":
		return "", errors.New("secret: set one of secretRef or env")
	}
	name := ref.SecretRef
	res, ok := r.get("Secret", name)
	if !ok {
		return "", fmt.Errorf("secret %q %w", name, ErrNotFound)
	}
	r.mu.RLock()
	c, ok := r.cache[name]
	r.mu.RUnlock()
	if ok && c.spec == string(res.Spec) {
		return c.value, nil
	}

	var spec config.SecretSpec
	if err := json.Unmarshal(res.Spec, &spec); err != nil {
		return "", fmt.Errorf("secret %q: read spec: %w", name, err)
	}
	if spec.Sealed == "" {
		// The registry seals every Secret it stores; one in clear means the
		// server runs without the hook, and is refused rather than used.
		return "", fmt.Errorf("secret %q cannot be opened: it is not sealed", name)
	}
	value, err := r.sealer.Open(name, spec.Sealed)
	if err != nil {
		return "", fmt.Errorf("secret %q cannot be opened: %w", name, err)
	}
	r.mu.Lock()
	if len(r.cache) >= maxCache {
		clear(r.cache)
	}
	r.cache[name] = opened{spec: string(res.Spec), value: value}
	r.mu.Unlock()
	return value, nil
}
