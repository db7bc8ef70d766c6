// Package secret keeps upstream credentials sealed at rest: it encrypts the
// value of every Secret resource with the server's secrets key before the
// registry stores it, and opens it again only where a tool upstream needs it.
package secret

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strings"

	"github.com/corral-dev/corral/internal/config"
)

// KeySize is the size in bytes of a secrets key.
const KeySize = 32

// version prefixes every sealed value, so that a later format can be told
// apart from this one.
const version = "v1"

// nonceSize is the GCM standard nonce size; tagSize its authentication tag.
const (
	nonceSize = 12
	tagSize   = 16
)

// Errors Open returns, wrapped; none of them carries the value.
var (
	// ErrMalformed: the input is not a sealed value at all.
	ErrMalformed = errors.New("not a sealed value")
	// ErrWrongKey: the value was sealed with another secrets key.
	ErrWrongKey = errors.New("sealed with another key")
	// ErrAuthentication: the ciphertext does not authenticate: it was
	// altered, or it was sealed for another Secret name.
	ErrAuthentication = errors.New("authentication failed (the sealed value was altered, or sealed for another secret name)")
)

// Sealer seals and opens secret values with one key. It is safe for
// concurrent use.
type Sealer struct {
	id    string
	aead  cipher.AEAD
	nonce func() hash.Hash // HMAC-SHA256 under the nonce subkey
}

// NewSealer returns a Sealer for a KeySize-byte key. Servers get theirs from
// LoadOrCreateKey; tests may build one directly.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secret: key is %d bytes, want %d", len(key), KeySize)
	}
	// Two subkeys, so that the key that derives nonces is never also an
	// AES key: HKDF-SHA256 with distinct labels.
	encKey, err := hkdf.Key(sha256.New, key, nil, "corral secret v1 encryption", 32)
	if err != nil {
		return nil, fmt.Errorf("secret: derive encryption key: %w", err)
	}
	nonceKey, err := hkdf.Key(sha256.New, key, nil, "corral secret v1 nonce", 32)
	if err != nil {
		return nil, fmt.Errorf("secret: derive nonce key: %w", err)
	}
	block, err := aes.NewCipher(encKey)
	if err != nil {
		return nil, fmt.Errorf("secret: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret: %w", err)
	}
	sum := sha256.Sum256(key)
	return &Sealer{
		id:    hex.EncodeToString(sum[:4]),
		aead:  aead,
		nonce: func() hash.Hash { return hmac.New(sha256.New, nonceKey) },
	}, nil
}

// KeyID returns the key's id: the first 8 hex digits of its SHA-256. Sealed
// values carry it, so that a value sealed with another key is named as such
// instead of failing as if it had been tampered with.
func (s *Sealer) KeyID() string { return s.id }

// Seal encrypts plaintext for the Secret called name, as
// "v1:<key id>:<base64url of nonce and ciphertext>", with AES-256-GCM and
// the name as additional data: the result opens only under the same name, so
// a sealed value cannot be copied into another Secret.
//
// The nonce is not random but derived, as HMAC(nonce subkey, name, 0x00,
// plaintext) cut to 12 bytes: a synthetic IV, as in AES-GCM-SIV (RFC 8452).
// Sealing is therefore deterministic, which is what lets re-applying the same
// Secret be reported "unchanged" instead of "configured" with a new revision
// each time. What determinism gives away is only whether two sealed values of
// the same name hold the same plaintext; and a nonce repeats only with the
// same name and plaintext, so GCM never sees one nonce for two messages.
func (s *Sealer) Seal(name, plaintext string) (string, error) {
	// The 0x00 separates name from plaintext in the nonce input; a name with
	// a NUL in it could make two different (name, plaintext) pairs share a
	// nonce, the one thing GCM must never see. No resource name has one.
	if strings.IndexByte(name, 0) >= 0 {
		return "", errors.New("secret: seal: the name contains a NUL byte")
	}
	nonce := s.deriveNonce(name, plaintext)
	out := make([]byte, nonceSize, nonceSize+len(plaintext)+tagSize)
	copy(out, nonce)
	out = s.aead.Seal(out, nonce, []byte(plaintext), []byte(name))
	return version + ":" + s.id + ":" + base64.RawURLEncoding.EncodeToString(out), nil
}

func (s *Sealer) deriveNonce(name, plaintext string) []byte {
	m := s.nonce()
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write([]byte(plaintext))
	return m.Sum(nil)[:nonceSize]
}

// Open decrypts a value Seal returned for the same name. Its errors wrap
// ErrMalformed, ErrWrongKey or ErrAuthentication and never contain the value.
func (s *Sealer) Open(name, sealed string) (string, error) {
	ver, rest, ok := strings.Cut(sealed, ":")
	if !ok || ver != version {
		return "", fmt.Errorf("%w: want %s:<key id>:<data>", ErrMalformed, version)
	}
	id, data, ok := strings.Cut(rest, ":")
	if !ok || !isKeyID(id) {
		return "", fmt.Errorf("%w: want %s:<key id>:<data>, the key id being 8 hex digits", ErrMalformed, version)
	}
	if id != s.id {
		return "", &keyError{sealed: id, have: s.id}
	}
	raw, err := base64.RawURLEncoding.DecodeString(data)
	if err != nil {
		return "", fmt.Errorf("%w: the data is not unpadded base64url", ErrMalformed)
	}
	if len(raw) < nonceSize+tagSize {
		return "", fmt.Errorf("%w: the data is too short", ErrMalformed)
	}
	plain, err := s.aead.Open(nil, raw[:nonceSize], raw[nonceSize:], []byte(name))
	if err != nil {
		return "", ErrAuthentication
	}
	return string(plain), nil
}

func isKeyID(s string) bool {
	if len(s) != 8 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// keyError names both keys; it is ErrWrongKey for errors.Is.
type keyError struct{ sealed, have string }

func (e *keyError) Error() string {
	return fmt.Sprintf("sealed with key %s, this server has key %s", e.sealed, e.have)
}

func (e *keyError) Is(target error) bool { return target == ErrWrongKey }

// Prepare is the registry's hook (registry.SetPrepare): it seals a Secret
// given in clear, so that only the sealed form is stored, listed and
// returned. A Secret given sealed, as `corral get secrets -o yaml` prints
// it, must open with this server's key: storing one that does not would only
// fail later, at the first tool call. Other kinds pass through untouched.
func (s *Sealer) Prepare(res config.Resource) (config.Resource, error) {
	if res.Kind != "Secret" {
		return res, nil
	}
	var spec config.SecretSpec
	dec := json.NewDecoder(bytes.NewReader(res.Spec))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return config.Resource{}, fmt.Errorf("spec: %w", err)
	}
	name := res.Metadata.Name
	switch {
	case (spec.Value == "") == (spec.Sealed == ""):
		return config.Resource{}, errors.New("spec: set exactly one of value or sealed")
	case spec.Value != "":
		sealed, err := s.Seal(name, spec.Value)
		if err != nil {
			return config.Resource{}, fmt.Errorf("spec.value: %w", err)
		}
		spec = config.SecretSpec{Description: spec.Description, Sealed: sealed}
	default:
		if _, err := s.Open(name, spec.Sealed); err != nil {
			return config.Resource{}, fmt.Errorf("spec.sealed: %w", sealedHint(err))
		}
	}
	// The canonical form, as config.DecodeJSON produces it, so that the
	// registry's byte comparison sees equal specs as equal.
	raw, err := json.Marshal(spec)
	if err != nil {
		return config.Resource{}, fmt.Errorf("spec: %w", err)
	}
	res.Spec = raw
	return res, nil
}

// sealedHint adds what to do about a sealed value this server cannot open.
func sealedHint(err error) error {
	switch {
	case errors.Is(err, ErrWrongKey):
		return fmt.Errorf("%w: %w; apply the value in clear, or start the server with the key it was sealed with (--secrets-key)", ErrWrongKey, err)
	case errors.Is(err, ErrAuthentication):
		return fmt.Errorf("%w; apply the value in clear", err)
	}
	return err
}
