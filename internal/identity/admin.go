package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// AdminTokenFile is the admin token's file name in the data directory.
const AdminTokenFile = "admin.token"

// adminTokenPrefix makes corral admin tokens recognisable to secret scanners.
const adminTokenPrefix = "corral_admin_"

// Ensure makes sure the data directory holds an admin token that the
// substrate accepts. If DIR/admin.token exists, its hash is (re)registered;
// otherwise a new token is created, written with mode 0600 and registered.
// It returns the token file's path and whether it was created now.
func (s *Store) Ensure(ctx context.Context, dataDir string) (path string, created bool, err error) {
	path = filepath.Join(dataDir, AdminTokenFile)
	token, err := ReadToken(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		token = newSecret(adminTokenPrefix)
		if err := writeFileAtomic(path, []byte(token+"\n"), 0o600); err != nil {
			return "", false, fmt.Errorf("identity: write admin token: %w", err)
		}
		created = true
	case err != nil:
		return "", false, fmt.Errorf("identity: %w", err)
	default:
		if info, err := os.Stat(path); err == nil && info.Mode().Perm()&0o077 != 0 {
			s.logger.WarnContext(ctx, "admin token file is readable by others; chmod 600 it", "path", path, "mode", info.Mode().Perm().String())
		}
	}
	r := record{Kind: kindAdmin, Created: time.Now().UTC()}
	value, _ := json.Marshal(r)
	_, err = s.kv.Create(ctx, bucketKey(kindAdmin, token), value)
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return "", false, fmt.Errorf("identity: register admin token: %w", err)
	}
	s.mu.Lock()
	s.records[bucketKey(kindAdmin, token)] = r
	s.mu.Unlock()
	return path, created, nil
}

// VerifyAdmin reports whether token is a registered admin token.
func (s *Store) VerifyAdmin(token string) bool {
	if !strings.HasPrefix(token, adminTokenPrefix) {
		return false
	}
	_, ok := s.lookup(kindAdmin, token)
	return ok
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

// newSecret returns prefix and 32 random bytes, base64url-encoded.
func newSecret(prefix string) string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
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
