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
	"os"
	"path/filepath"
	"strings"
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
}

// Admins verifies admin tokens against the hashes in the substrate.
type Admins struct {
	kv jetstream.KeyValue
}

// OpenAdmins creates or updates the identity bucket.
func OpenAdmins(ctx context.Context, s substrate) (*Admins, error) {
	kv, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "corral credential hashes",
	})
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &Admins{kv: kv}, nil
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
	}
	record, _ := json.Marshal(map[string]any{"kind": "admin", "created": time.Now().UTC()})
	if _, err := a.kv.Put(ctx, adminKey(token), record); err != nil {
		return "", false, fmt.Errorf("identity: register admin token: %w", err)
	}
	return path, created, nil
}

// Verify reports whether token is a registered admin token.
func (a *Admins) Verify(ctx context.Context, token string) (bool, error) {
	if !strings.HasPrefix(token, adminTokenPrefix) {
		return false, nil
	}
	_, err := a.kv.Get(ctx, adminKey(token))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("identity: verify admin token: %w", err)
	}
	return true, nil
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
