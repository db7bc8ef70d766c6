// Package identity holds who may talk to corral. For now that is the admin
// credential: a random bearer token created on first start, written to the
// data directory for the operator, and stored in the substrate only as a
// SHA-256 hash, so that every replica accepts it and none can reveal it.
package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket holds credential hashes, keyed "admin.<sha256 hex>".
const Bucket = "corral_identity"

// AdminTokenFile is the admin token's file name in the data directory.
const AdminTokenFile = "admin.token"

// adminTokenPrefix makes corral admin tokens recognisable to secret scanners.
const adminTokenPrefix = "corral_admin_"

// substrate is what Admins needs from the bus.
type substrate interface {
	KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
	Watch(ctx context.Context, kv jetstream.KeyValue, apply func(context.Context, jetstream.KeyValueEntry), loaded func()) error
}

// Admins verifies admin tokens against the hashes in the substrate, which it
// mirrors in memory so that checking a token costs no round trip and keeps
// working while the substrate is briefly away.
type Admins struct {
	kv     jetstream.KeyValue
	bus    substrate
	logger *slog.Logger

	mu     sync.RWMutex
	hashes map[string]bool // bucket keys of registered admin tokens
	loaded chan struct{}
}

// OpenAdmins creates or updates the identity bucket. Call Run to mirror it.
func OpenAdmins(ctx context.Context, logger *slog.Logger, s substrate) (*Admins, error) {
	kv, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "corral credential hashes",
	})
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &Admins{kv: kv, bus: s, logger: logger, hashes: map[string]bool{}, loaded: make(chan struct{})}, nil
}

// Run mirrors the registered token hashes into memory until ctx ends.
func (a *Admins) Run(ctx context.Context) error {
	return a.bus.Watch(ctx, a.kv, func(_ context.Context, e jetstream.KeyValueEntry) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.hashes[e.Key()] = e.Operation() == jetstream.KeyValuePut
	}, func() { close(a.loaded) })
}

// WaitLoaded blocks until the registered hashes are in memory or ctx ends.
func (a *Admins) WaitLoaded(ctx context.Context) error {
	select {
	case <-a.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("identity: waiting for credentials to load: %w", ctx.Err())
	}
}

// Ensure makes sure the data directory holds an admin token that the
// substrate accepts. If DIR/admin.token exists, its hash is (re)registered;
// otherwise a new token is created, written with mode 0600 and registered.
// It returns the token file's path and whether it was created now.
func (a *Admins) Ensure(ctx context.Context, dataDir string) (path string, created bool, err error) {
	path = filepath.Join(dataDir, AdminTokenFile)
	token, err := ReadToken(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		token = newToken()
		if err := writeFileAtomic(path, []byte(token+"\n"), 0o600); err != nil {
			return "", false, fmt.Errorf("identity: write admin token: %w", err)
		}
		created = true
	case err != nil:
		return "", false, fmt.Errorf("identity: %w", err)
	default:
		if info, err := os.Stat(path); err == nil && info.Mode().Perm()&0o077 != 0 {
			a.logger.WarnContext(ctx, "admin token file is readable by others; chmod 600 it", "path", path, "mode", info.Mode().Perm().String())
		}
	}
	record, _ := json.Marshal(map[string]any{"kind": "admin", "created": time.Now().UTC()})
	_, err = a.kv.Create(ctx, adminKey(token), record)
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return "", false, fmt.Errorf("identity: register admin token: %w", err)
	}
	a.mu.Lock()
	a.hashes[adminKey(token)] = true
	a.mu.Unlock()
	return path, created, nil
}

// Verify reports whether token is a registered admin token.
func (a *Admins) Verify(token string) bool {
	if !strings.HasPrefix(token, adminTokenPrefix) {
		return false
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.hashes[adminKey(token)]
}

// ReadToken reads a token file, ignoring surrounding white space.
func ReadToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return token, nil
}

// adminKey is the bucket key of a token: looking a token up by its hash means
// no comparison of secrets, and so no timing to leak.
func adminKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "admin." + hex.EncodeToString(sum[:])
}

func newToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return adminTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// writeFileAtomic writes data to a temporary file beside path and renames it
// into place, so that a crash never leaves a half-written token.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename this finds nothing
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
