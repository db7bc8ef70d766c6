package console

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Session lifetimes: a session ends after idleTTL without a request, and
// after maxTTL whatever happens; a trusted Issuer's token ends it sooner.
const (
	idleTTL = 30 * time.Minute
	maxTTL  = 12 * time.Hour
	// touchEvery is how old a session's last-seen time may grow before a
	// request writes it again: idleness is counted to within touchEvery,
	// and a person's requests do not each write to the substrate.
	touchEvery = time.Minute
)

// SessionBucket holds the console's sessions, shared by every replica, so
// that a person signed in on one is signed in on all and a sign-out on
// one ends the session on all. Entries live at most maxTTL after their
// last write.
const SessionBucket = "corral_console_sessions"

// session is a signed-in person. The credential stays on the server: the
// browser holds only the session token (an HttpOnly cookie) and the CSRF
// token (in memory, sent back as a header on every change).
type session struct {
	person     Person // set by authenticating credential, never stored
	credential string
	csrf       string
	created    time.Time
	seen       time.Time
	expires    time.Time
	key        string // the bucket key: the token's digest
	rev        uint64 // the entry's revision as read
}

// stored is a session as the bucket holds it. The session token itself is
// never stored: the key is its SHA-256, and the credential and CSRF token
// are sealed with a key derived from the token (sealKey), so whoever reads
// the bucket learns neither a way to sign in nor anyone's credential.
type stored struct {
	Sealed  []byte    `json:"sealed"`
	Created time.Time `json:"created"`
	Seen    time.Time `json:"seen"`
	Expires time.Time `json:"expires"`
}

// sealedPart is what stored.Sealed holds.
type sealedPart struct {
	Credential string `json:"credential"`
	CSRF       string `json:"csrf"`
}

// errNoSession: the token names no live session (never issued, signed out,
// expired, idle, or not a token at all).
var errNoSession = errors.New("console: no such session")

// sessions keeps the console's sessions in SessionBucket. Nothing is
// cached on the replica: every lookup reads the bucket, so a sign-out on
// any replica ends the session on all of them at once.
type sessions struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sessionKey is the bucket key of a session token: its SHA-256, in hex.
func sessionKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Labels of what seal seals, so that a value sealed as one thing never
// opens as another.
const (
	sessionLabel = "corral console session v1"
	flowLabel    = "corral console oidc flow v1"
)

// sealKey is the AEAD that seals what a random token keeps in a bucket:
// AES-256-GCM under HMAC-SHA256(token, label), which the bucket key (a
// plain SHA-256 of the token) does not reveal.
func sealKey(token, label string) cipher.AEAD {
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte(label))
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err) // AES always has a 16-byte block
	}
	return aead
}

// seal encrypts v as JSON for the holder of token, bound to the bucket
// key it is stored under.
func seal(token, label, key string, v any) ([]byte, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	aead := sealKey(token, label)
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	return aead.Seal(nonce, nonce, plain, []byte(key)), nil
}

// unseal opens what seal made into v; anything else is errNoSession.
func unseal(token, label, key string, sealed []byte, v any) error {
	aead := sealKey(token, label)
	if len(sealed) < aead.NonceSize() {
		return errNoSession
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(key))
	if err != nil || json.Unmarshal(plain, v) != nil {
		return errNoSession
	}
	return nil
}

// create starts a session for p and returns its token.
func (s *sessions) create(ctx context.Context, p Person, credential string, expiry time.Time) (string, *session, error) {
	now := s.now().UTC()
	token := randomToken()
	se := &session{person: p, credential: credential, csrf: randomToken(), created: now, seen: now, expires: now.Add(maxTTL), key: sessionKey(token)}
	if !expiry.IsZero() && expiry.Before(se.expires) {
		se.expires = expiry.UTC()
	}
	sealed, err := seal(token, sessionLabel, se.key, sealedPart{Credential: credential, CSRF: se.csrf})
	if err != nil {
		return "", nil, fmt.Errorf("console: session: %w", err)
	}
	value, err := json.Marshal(stored{Sealed: sealed, Created: se.created, Seen: se.seen, Expires: se.expires})
	if err != nil {
		return "", nil, fmt.Errorf("console: session: %w", err)
	}
	if se.rev, err = s.kv.Create(ctx, se.key, value); err != nil {
		return "", nil, fmt.Errorf("console: store session: %w", err)
	}
	return token, se, nil
}

// get returns the live session token names, and marks it seen. A token
// that names no live session is errNoSession; anything else is the
// substrate failing.
func (s *sessions) get(ctx context.Context, token string) (*session, error) {
	se, raw, err := s.read(ctx, token)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	if now.Sub(raw.Seen) >= touchEvery {
		raw.Seen = now
		value, err := json.Marshal(raw)
		if err != nil {
			return nil, fmt.Errorf("console: session: %w", err)
		}
		// Guarded by the revision read: a sign-out in between (a delete
		// marker is a newer revision) is never undone by this write. A
		// lost race with another replica's touch loses nothing: that
		// replica wrote the same or a later time.
		if rev, err := s.kv.Update(ctx, se.key, value, se.rev); err == nil {
			se.rev, se.seen = rev, now
		}
	}
	return se, nil
}

// peek returns the live session token names, without marking it seen.
func (s *sessions) peek(ctx context.Context, token string) (*session, error) {
	se, _, err := s.read(ctx, token)
	return se, err
}

// read finds token's session and checks that it is live; an ended one is
// deleted on the way.
func (s *sessions) read(ctx context.Context, token string) (*session, stored, error) {
	if token == "" {
		return nil, stored{}, errNoSession
	}
	key := sessionKey(token)
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, stored{}, errNoSession
	}
	if err != nil {
		return nil, stored{}, fmt.Errorf("console: read session: %w", err)
	}
	var raw stored
	if err := json.Unmarshal(e.Value(), &raw); err != nil {
		return nil, stored{}, errNoSession
	}
	var secret sealedPart
	if err := unseal(token, sessionLabel, key, raw.Sealed, &secret); err != nil {
		return nil, stored{}, err
	}
	now := s.now()
	if now.After(raw.Expires) || now.Sub(raw.Seen) > idleTTL {
		_ = s.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
		return nil, stored{}, errNoSession
	}
	return &session{credential: secret.Credential, csrf: secret.CSRF, created: raw.Created, seen: raw.Seen,
		expires: raw.Expires, key: key, rev: e.Revision()}, raw, nil
}

// end forgets the session: its cookie no longer signs anyone in, on any
// replica.
func (s *sessions) end(ctx context.Context, token string) error {
	if token == "" {
		return nil
	}
	if err := s.kv.Delete(ctx, sessionKey(token)); err != nil {
		return fmt.Errorf("console: end session: %w", err)
	}
	return nil
}

// checkCSRF reports whether token is the session's CSRF token.
func (se *session) checkCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(se.csrf)) == 1
}
