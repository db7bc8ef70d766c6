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
	"slices"
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
	r := record{Kind: kindAdmin, Created: time.Now().UTC(), Name: AdminTokenFile}
	value, _ := json.Marshal(r)
	k := bucketKey(kindAdmin, token)
	_, err = s.kv.Create(ctx, k, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		// Registered before: keep the record as it is, revoked or not.
		entry, err := s.kv.Get(ctx, k)
		if err != nil {
			return "", false, fmt.Errorf("identity: read admin token record: %w", err)
		}
		if err := json.Unmarshal(entry.Value(), &r); err != nil {
			return "", false, fmt.Errorf("identity: read admin token record: %w", err)
		}
		if r.Revoked {
			s.logger.WarnContext(ctx, "the admin token file holds a revoked token; delete the file and restart for a new one", "path", path)
		}
	} else if err != nil {
		return "", false, fmt.Errorf("identity: register admin token: %w", err)
	}
	s.mu.Lock()
	s.records[k] = r
	s.mu.Unlock()
	return path, created, nil
}

// VerifyAdmin reports whether token is a registered admin token that is
// neither revoked nor expired.
func (s *Store) VerifyAdmin(token string) bool {
	if !strings.HasPrefix(token, adminTokenPrefix) {
		return false
	}
	r, ok := s.lookup(kindAdmin, token)
	return ok && !r.Revoked && (r.Expires == nil || time.Now().Before(*r.Expires))
}

// AdminTokenOf describes the admin token token is, when it is a live one:
// who acted with it, for the audit.
func (s *Store) AdminTokenOf(token string) (AdminToken, bool) {
	if !s.VerifyAdmin(token) {
		return AdminToken{}, false
	}
	r, _ := s.lookup(kindAdmin, token)
	return describeAdmin(bucketKey(kindAdmin, token), r, time.Now()), true
}

// AdminToken describes an admin token. The token itself is shown once,
// when created; afterwards its ID names it.
type AdminToken struct {
	// ID is the first 12 hex digits of the token's SHA-256.
	ID      string     `json:"id"`
	Name    string     `json:"name"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires,omitempty"`
	// Expired says the token no longer works, its expiry past.
	Expired bool `json:"expired,omitempty"`
}

// ErrAdminTokenNotFound is returned (wrapped) for an id that names no live
// admin token.
var ErrAdminTokenNotFound = errors.New("no such admin token")

// CreateAdminToken makes an admin token called name that expires after
// ttl (0: lives until revoked), and returns it with its description. The
// caller must show it now: only its hash is kept.
func (s *Store) CreateAdminToken(ctx context.Context, name string, ttl time.Duration) (string, AdminToken, error) {
	if ttl < 0 {
		return "", AdminToken{}, errors.New("identity: admin token: ttl must not be negative")
	}
	secret := newSecret(adminTokenPrefix)
	r := record{Kind: kindAdmin, Created: time.Now().UTC(), Name: name}
	if ttl > 0 {
		exp := r.Created.Add(ttl)
		r.Expires = &exp
	}
	value, err := json.Marshal(r)
	if err != nil {
		return "", AdminToken{}, err
	}
	k := bucketKey(kindAdmin, secret)
	if _, err := s.kv.Create(ctx, k, value); err != nil {
		return "", AdminToken{}, fmt.Errorf("identity: store admin token %s: %w", name, err)
	}
	s.mu.Lock()
	s.records[k] = r
	s.mu.Unlock()
	return secret, describeAdmin(k, r, time.Now()), nil
}

// AdminTokens lists the admin tokens not revoked, expired ones included,
// oldest first.
func (s *Store) AdminTokens() []AdminToken {
	now := time.Now()
	s.mu.RLock()
	var out []AdminToken
	for k, r := range s.records {
		if r.Kind == kindAdmin && !r.Revoked {
			out = append(out, describeAdmin(k, r, now))
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b AdminToken) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// RevokeAdminToken revokes the admin token with the given ID on every
// replica, as fast as their watches see it. The record stays, marked, so
// that a token file holding it is not registered again at the next start.
func (s *Store) RevokeAdminToken(ctx context.Context, id string) (AdminToken, error) {
	var (
		found string
		r     record
	)
	s.mu.RLock()
	for k, rec := range s.records {
		if rec.Kind == kindAdmin && !rec.Revoked && len(id) == keyIDLength && strings.HasPrefix(k, kindAdmin+"."+id) {
			found, r = k, rec
			break
		}
	}
	s.mu.RUnlock()
	if found == "" {
		return AdminToken{}, fmt.Errorf("admin token %s: %w", id, ErrAdminTokenNotFound)
	}
	r.Revoked = true
	value, err := json.Marshal(r)
	if err != nil {
		return AdminToken{}, err
	}
	if _, err := s.kv.Put(ctx, found, value); err != nil {
		return AdminToken{}, fmt.Errorf("identity: revoke admin token %s: %w", id, err)
	}
	s.mu.Lock()
	s.records[found] = r
	s.mu.Unlock()
	return describeAdmin(found, r, time.Now()), nil
}

func describeAdmin(bucketKey string, r record, now time.Time) AdminToken {
	id := strings.TrimPrefix(bucketKey, kindAdmin+".")
	return AdminToken{ID: id[:keyIDLength], Name: r.Name, Created: r.Created, Expires: r.Expires,
		Expired: r.Expires != nil && !now.Before(*r.Expires)}
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
