package secret

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxKeyFile bounds what LoadOrCreateKey reads: a key file is 45 bytes.
const maxKeyFile = 1 << 10

// LoadOrCreateKey returns a Sealer for the key in the file at path, creating
// the file with a new random key if there is none (created reports that).
// The file holds the key in base64 and must not be readable by group or
// others. Replicas that share a NATS must share this file: a Secret sealed by
// one is opened by all.
func LoadOrCreateKey(path string) (_ *Sealer, created bool, _ error) {
	s, err := loadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return s, false, err
	}
	var key [KeySize]byte
	_, _ = rand.Read(key[:]) // crypto/rand.Read never fails
	won, err := createKeyFile(path, key[:])
	if err != nil {
		return nil, false, fmt.Errorf("secret: create key file %s: %w", path, err)
	}
	if !won {
		// Another process created it first: use its key, not ours.
		s, err := loadKey(path)
		if errors.Is(err, fs.ErrNotExist) { // a dangling symbolic link
			return nil, false, fmt.Errorf("secret: key file %s: %w", path, err)
		}
		return s, false, err
	}
	s, err = NewSealer(key[:])
	return s, true, err
}

// loadKey reads and checks an existing key file. A missing file is an error
// wrapping fs.ErrNotExist.
func loadKey(path string) (*Sealer, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("secret: open key file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secret: key file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("secret: key file %s is not a regular file", path)
	}
	// Refuse rather than fix: a key that others could read may already be
	// known, and the operator should know that it was exposed.
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("secret: key file %s has mode %#o, readable by group or others; run chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("secret: read key file %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("secret: key file %s is not a secrets key: it is larger than %d bytes", path, maxKeyFile)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("secret: key file %s is not a secrets key: want %d bytes in base64", path, KeySize)
	}
	s, err := NewSealer(key)
	if err != nil {
		return nil, fmt.Errorf("secret: key file %s: %w", path, err)
	}
	return s, nil
}

// createKeyFile writes key to a temporary file beside path and links it into
// place. A link, unlike a rename, fails if path exists: two processes
// starting on one empty directory end up with one key, the first one's, and
// won tells whether it was ours. Nothing ever sees a partly written key.
func createKeyFile(path string, key []byte) (won bool, err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path))
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil { // CreateTemp's mode, made explicit
		tmp.Close()
		return false, err
	}
	if _, err := tmp.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	switch err := os.Link(tmp.Name(), path); {
	case errors.Is(err, fs.ErrExist):
		return false, nil
	case err != nil:
		// File systems without hard links: a rename is atomic too, only
		// not exclusive, which matters only in a race nobody should run.
		if err := os.Rename(tmp.Name(), path); err != nil {
			return false, err
		}
	}
	syncDir(dir)
	return true, nil
}

// syncDir makes the new directory entry durable where the platform allows;
// a failure leaves the key written, only perhaps not yet on disk.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
