package identity

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus"
)

// SigningKeysBucket holds the public half of every replica's signing keys,
// keyed by kid, so that each replica verifies the tokens of all of them.
const SigningKeysBucket = "corral_signing_keys"

// SigningKeysDir is the directory, inside corral's data directory, that
// holds this replica's private signing keys, one <kid>.jwk file each.
const SigningKeysDir = "signing-keys"

const (
	// signingAlg is the only algorithm corral signs with and accepts for
	// its own tokens.
	signingAlg = "EdDSA"
	// DefaultMaxTTL is the longest lifetime of a corral token unless
	// SignerOptions.MaxTTL says otherwise.
	DefaultMaxTTL = 15 * time.Minute
	// retireGrace is added to MaxTTL before a rotated-out key retires, so
	// that a token signed just before the rotation, and a verifier whose
	// clock is a little behind, still agree it is valid.
	retireGrace = time.Minute
	// defaultIdentityTTL is the lifetime of an IdentityToken unless asked.
	defaultIdentityTTL = 60 * time.Second
	// pruneEvery is how often Run looks for retired keys.
	pruneEvery = 30 * time.Second
	// maxCachedTokens bounds the IdentityToken cache.
	maxCachedTokens = 4096
)

// Token types in the typ header: access tokens for corral itself say
// "at+jwt" (RFC 9068), so that no other kind of JWT can pass for one;
// tokens for other audiences (identity tokens sent upstream) say "JWT",
// which every JWT library accepts.
const (
	typAccess = "at+jwt"
	typJWT    = "JWT"
)

// SignerOptions configure a Signer.
type SignerOptions struct {
	// Issuer is corral's issuer URL: the iss of every token it signs and
	// the aud of its access tokens.
	Issuer string
	// MaxTTL is the longest lifetime of any token corral signs (default
	// 15m). A rotated-out key stays in the JWKS until MaxTTL+1m after the
	// rotation.
	MaxTTL time.Duration
	// Now is the clock; time.Now by default.
	Now func() time.Time
}

// SigningKey describes one key that signs or verifies corral's tokens.
type SigningKey struct {
	ID        string     `json:"kid"`
	Algorithm string     `json:"alg"`
	Created   time.Time  `json:"created"`
	Retires   *time.Time `json:"retires,omitempty"`
	// Signing says this replica signs with it now.
	Signing bool `json:"signing"`
	// Local says its private key is in this replica's data directory.
	Local bool `json:"local"`
}

// Signer signs corral's tokens with this replica's newest Ed25519 key and
// verifies tokens signed by any replica's live key. Its private keys live
// in DIR/signing-keys; their public halves are published to the
// corral_signing_keys bucket and mirrored from it, so verification never
// leaves memory.
type Signer struct {
	kv     jetstream.KeyValue
	bus    substrate
	logger *slog.Logger
	dir    string // DIR/signing-keys
	issuer string
	maxTTL time.Duration
	now    func() time.Time

	mu     sync.Mutex // serialises changes to local, remote and keys
	local  map[string]*localKey
	remote map[string]*verifyKey // from the bucket, other replicas' keys included
	keys   atomic.Pointer[keySet]
	loaded chan struct{}

	cacheMu sync.Mutex
	cache   map[string]cachedToken
	// verified caches tokens verified in the last minute (Verify).
	verified      sync.Map // verifiedKey -> verifiedEntry
	verifiedCount atomic.Int64
}

// localKey is a private key of this replica, as its file keeps it.
type localKey struct {
	kid     string
	priv    ed25519.PrivateKey
	created time.Time
	retires *time.Time
}

// keyFile is a private key's file: a JWK (RFC 7517 allows members beyond
// its own) with corral's created and retires.
type keyFile struct {
	Created time.Time  `json:"created"`
	Retires *time.Time `json:"retires,omitempty"`
}

// published is a key's value in the bucket.
type published struct {
	JWK     json.RawMessage `json:"jwk"`
	Created time.Time       `json:"created"`
	Retires *time.Time      `json:"retires,omitempty"`
}

// verifyKey is a public key ready for verification.
type verifyKey struct {
	kid     string
	pub     ed25519.PublicKey
	created time.Time
	retires *time.Time
	jwk     []byte // the public JWK, as the JWKS serves it
	local   bool
}

// live reports whether the key may verify at now.
func (k *verifyKey) live(now time.Time) bool {
	return k.retires == nil || now.Before(*k.retires)
}

// keySet is an immutable snapshot of the keys, swapped in whole on every
// change so that Mint and Verify take no lock.
type keySet struct {
	byKID   map[string]*verifyKey
	ordered []*verifyKey // oldest first
	signing *signingKey
}

// signingKey is the key Mint signs with, its headers already encoded.
type signingKey struct {
	kid       string
	priv      ed25519.PrivateKey
	headerAT  string // base64url of the at+jwt header, with the trailing "."
	headerJWT string
}

// OpenSigner loads the private keys in dir/signing-keys, creating one if
// there is none, deletes those that have retired, and publishes the rest.
// Call Run to mirror other replicas' keys and to retire keys as time passes.
func OpenSigner(ctx context.Context, logger *slog.Logger, b *bus.Bus, dir string, opts SignerOptions) (*Signer, error) {
	return openSigner(ctx, logger, b, dir, opts)
}

func openSigner(ctx context.Context, logger *slog.Logger, b substrate, dir string, opts SignerOptions) (*Signer, error) {
	if opts.Issuer == "" {
		return nil, errors.New("identity: signer: the issuer URL is required")
	}
	if opts.MaxTTL <= 0 {
		opts.MaxTTL = DefaultMaxTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      SigningKeysBucket,
		Description: "corral public signing keys",
	})
	if err != nil {
		return nil, fmt.Errorf("identity: signer: %w", err)
	}
	s := &Signer{
		kv:     kv,
		bus:    b,
		logger: logger.With("component", "signer"),
		dir:    filepath.Join(dir, SigningKeysDir),
		issuer: opts.Issuer,
		maxTTL: opts.MaxTTL,
		now:    opts.Now,
		local:  map[string]*localKey{},
		remote: map[string]*verifyKey{},
		loaded: make(chan struct{}),
		cache:  map[string]cachedToken{},
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: signer: %w", err)
	}
	if err := s.loadLocal(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(ctx)
	newest := s.newestLocal()
	if newest == nil {
		k, err := s.createKey()
		if err != nil {
			return nil, err
		}
		s.logger.InfoContext(ctx, "created signing key", "kid", k.kid)
		newest = k
	}
	// Only the newest key signs. Any other key without a retirement (a
	// rotation cut short by a crash) retires as if rotated out now.
	if err := s.retireAllBut(newest.kid); err != nil {
		return nil, err
	}
	for _, k := range s.local {
		if err := s.publish(ctx, k); err != nil {
			return nil, err
		}
	}
	s.rebuildLocked()
	return s, nil
}

// loadLocal reads every key file in the directory.
func (s *Signer) loadLocal() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("identity: signer: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".jwk") {
			continue
		}
		k, err := readKeyFile(filepath.Join(s.dir, name))
		if err != nil {
			return fmt.Errorf("identity: signer: key file %s: %w", filepath.Join(s.dir, name), err)
		}
		if k.kid+".jwk" != name {
			return fmt.Errorf("identity: signer: key file %s holds kid %q", filepath.Join(s.dir, name), k.kid)
		}
		s.local[k.kid] = k
	}
	return nil
}

func readKeyFile(path string) (*localKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(data); err != nil {
		return nil, err
	}
	priv, ok := jwk.Key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("not an Ed25519 private key (%T)", jwk.Key)
	}
	var meta keyFile
	if err := json.Unmarshal(data, &meta); err != nil {
		return nil, err
	}
	if jwk.KeyID == "" || meta.Created.IsZero() {
		return nil, errors.New("kid or created missing")
	}
	return &localKey{kid: jwk.KeyID, priv: priv, created: meta.Created, retires: meta.Retires}, nil
}

// writeKeyFile writes k's file, mode 0600, atomically.
func (s *Signer) writeKeyFile(k *localKey) error {
	data, err := jose.JSONWebKey{Key: k.priv, KeyID: k.kid, Algorithm: signingAlg, Use: "sig"}.MarshalJSON()
	if err != nil {
		return err
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(data, &members); err != nil {
		return err
	}
	meta, err := json.Marshal(keyFile{Created: k.created, Retires: k.retires})
	if err != nil {
		return err
	}
	if err := json.Unmarshal(meta, &members); err != nil {
		return err
	}
	data, err = json.MarshalIndent(members, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(s.dir, k.kid+".jwk"), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("identity: signer: write key %s: %w", k.kid, err)
	}
	return nil
}

// createKey makes a new key, writes its file and adds it to local. Its kid
// is its RFC 7638 thumbprint.
func (s *Signer) createKey() (*localKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: signer: generate key: %w", err)
	}
	jwk := jose.JSONWebKey{Key: priv.Public()}
	thumb, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("identity: signer: %w", err)
	}
	k := &localKey{
		kid:     base64.RawURLEncoding.EncodeToString(thumb),
		priv:    priv,
		created: s.now().UTC().Truncate(time.Millisecond),
	}
	// A key created in the same millisecond as the newest must still sort
	// after it, or the previous key would go on signing.
	if n := s.newestLocal(); n != nil && !k.created.After(n.created) {
		k.created = n.created.Add(time.Millisecond)
	}
	if err := s.writeKeyFile(k); err != nil {
		return nil, err
	}
	s.local[k.kid] = k
	return k, nil
}

// newestLocal returns the newest local key that has not retired, or nil.
func (s *Signer) newestLocal() *localKey {
	var newest *localKey
	now := s.now()
	for _, k := range s.local {
		if k.retires != nil && !now.Before(*k.retires) {
			continue
		}
		if newest == nil || k.created.After(newest.created) || (k.created.Equal(newest.created) && k.kid > newest.kid) {
			newest = k
		}
	}
	return newest
}

// retireAllBut sets the retirement of every local key other than kid that
// has none, and writes their files.
func (s *Signer) retireAllBut(kid string) error {
	retires := s.now().UTC().Add(s.maxTTL + retireGrace).Truncate(time.Millisecond)
	for _, k := range s.local {
		if k.kid == kid || k.retires != nil {
			continue
		}
		k.retires = &retires
		if err := s.writeKeyFile(k); err != nil {
			return err
		}
	}
	return nil
}

// publishedValue is k's value in the bucket.
func publishedValue(k *localKey) ([]byte, error) {
	jwk, err := publicJWK(k.kid, k.priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	return json.Marshal(published{JWK: jwk, Created: k.created, Retires: k.retires})
}

func publicJWK(kid string, pub ed25519.PublicKey) ([]byte, error) {
	return jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: signingAlg, Use: "sig"}.MarshalJSON()
}

// publish writes k's public half to the bucket.
func (s *Signer) publish(ctx context.Context, k *localKey) error {
	value, err := publishedValue(k)
	if err != nil {
		return fmt.Errorf("identity: signer: publish key %s: %w", k.kid, err)
	}
	if _, err := s.kv.Put(ctx, k.kid, value); err != nil {
		return fmt.Errorf("identity: signer: publish key %s: %w", k.kid, err)
	}
	return nil
}

// Run mirrors the published keys of every replica until ctx ends, and
// deletes this replica's keys once they retire.
func (s *Signer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(pruneEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.prune(ctx)
			}
		}
	})
	err := s.bus.Watch(ctx, s.kv, s.observe, func() { close(s.loaded) })
	wg.Wait()
	return err
}

// WaitLoaded blocks until the published keys are in memory or ctx ends.
func (s *Signer) WaitLoaded(ctx context.Context) error {
	select {
	case <-s.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("identity: waiting for signing keys to load: %w", ctx.Err())
	}
}

// observe records one published key, or its deletion.
func (s *Signer) observe(ctx context.Context, e jetstream.KeyValueEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.remote, e.Key())
		s.rebuildLocked()
		return
	}
	k, err := parsePublished(e.Key(), e.Value())
	if err != nil {
		s.logger.WarnContext(ctx, "skipping unreadable signing key", "kid", e.Key(), "err", err)
		return
	}
	s.remote[k.kid] = k
	s.rebuildLocked()
}

// parsePublished reads a bucket value: an Ed25519 public JWK whose kid is
// the bucket key.
func parsePublished(kid string, value []byte) (*verifyKey, error) {
	var p published
	if err := json.Unmarshal(value, &p); err != nil {
		return nil, err
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(p.JWK); err != nil {
		return nil, err
	}
	pub, ok := jwk.Key.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("not an Ed25519 public key (%T)", jwk.Key)
	}
	if jwk.KeyID != kid {
		return nil, fmt.Errorf("jwk kid %q is not its key", jwk.KeyID)
	}
	// Serve what we parsed, not what we were given: no stray members.
	out, err := publicJWK(kid, pub)
	if err != nil {
		return nil, err
	}
	return &verifyKey{kid: kid, pub: pub, created: p.Created, retires: p.Retires, jwk: out}, nil
}

// prune deletes the retired local keys and forgets retired remote ones.
func (s *Signer) prune(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(ctx)
	s.rebuildLocked()
}

func (s *Signer) pruneLocked(ctx context.Context) {
	now := s.now()
	for kid, k := range s.local {
		if k.retires == nil || now.Before(*k.retires) {
			continue
		}
		// The file goes first: should the bucket delete fail, the key is
		// still past its retirement for everyone who reads it.
		if err := os.Remove(filepath.Join(s.dir, kid+".jwk")); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.logger.WarnContext(ctx, "cannot delete retired signing key", "kid", kid, "err", err)
			continue
		}
		delete(s.local, kid)
		if err := s.kv.Delete(ctx, kid); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			s.logger.WarnContext(ctx, "cannot unpublish retired signing key", "kid", kid, "err", err)
		}
		s.logger.InfoContext(ctx, "retired signing key", "kid", kid)
	}
	for kid, k := range s.remote {
		if !k.live(now) {
			delete(s.remote, kid)
		}
	}
}

// rebuildLocked swaps in a new snapshot of the keys: local keys as this
// replica knows them, and every other published key.
func (s *Signer) rebuildLocked() {
	ks := &keySet{byKID: map[string]*verifyKey{}}
	for kid, k := range s.remote {
		if _, mine := s.local[kid]; !mine {
			ks.byKID[kid] = k
		}
	}
	for kid, k := range s.local {
		pub := k.priv.Public().(ed25519.PublicKey)
		jwk, err := publicJWK(kid, pub)
		if err != nil {
			continue // an Ed25519 key always marshals
		}
		ks.byKID[kid] = &verifyKey{kid: kid, pub: pub, created: k.created, retires: k.retires, jwk: jwk, local: true}
	}
	for _, k := range ks.byKID {
		ks.ordered = append(ks.ordered, k)
	}
	slices.SortFunc(ks.ordered, func(a, b *verifyKey) int {
		if c := a.created.Compare(b.created); c != 0 {
			return c
		}
		return strings.Compare(a.kid, b.kid)
	})
	if k := s.newestLocal(); k != nil {
		ks.signing = &signingKey{
			kid:       k.kid,
			priv:      k.priv,
			headerAT:  encodeHeader(k.kid, typAccess),
			headerJWT: encodeHeader(k.kid, typJWT),
		}
	}
	s.keys.Store(ks)
}

func encodeHeader(kid, typ string) string {
	h, _ := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{signingAlg, kid, typ})
	return base64.RawURLEncoding.EncodeToString(h) + "."
}

// Issuer returns corral's issuer URL.
func (s *Signer) Issuer() string { return s.issuer }

// Mint signs c with this replica's newest key. It sets iat and nbf to now
// and exp to iat+ttl, where a ttl that is not positive or exceeds MaxTTL
// becomes MaxTTL; it fills iss with the Issuer, aud with the Issuer (an
// access token for corral) and jti with a random id when they are empty.
// sub and client_id are required. Access tokens (aud includes the Issuer)
// carry typ "at+jwt", others typ "JWT".
func (s *Signer) Mint(c Claims, ttl time.Duration) (string, error) {
	token, _, err := s.mint(c, ttl)
	return token, err
}

func (s *Signer) mint(c Claims, ttl time.Duration) (string, int64, error) {
	if c.Subject == "" || c.ClientID == "" {
		return "", 0, errors.New("identity: mint: sub and client_id are required")
	}
	sk := s.keys.Load().signing
	if sk == nil {
		return "", 0, errors.New("identity: mint: no signing key")
	}
	if ttl <= 0 || ttl > s.maxTTL {
		ttl = s.maxTTL
	}
	lifetime := int64(ttl / time.Second)
	if lifetime < 1 {
		lifetime = 1
	}
	if c.Issuer == "" {
		c.Issuer = s.issuer
	}
	if len(c.Audience) == 0 {
		c.Audience = Audience{s.issuer}
	}
	if c.ID == "" {
		var id [16]byte
		_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
		c.ID = base64.RawURLEncoding.EncodeToString(id[:])
	}
	c.IssuedAt = s.now().Unix()
	c.NotBefore = c.IssuedAt
	c.Expiry = c.IssuedAt + lifetime
	payload, err := json.Marshal(c)
	if err != nil {
		return "", 0, fmt.Errorf("identity: mint: %w", err)
	}
	header := sk.headerJWT
	if c.Audience.Contains(s.issuer) {
		header = sk.headerAT
	}
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, len(header)+enc.EncodedLen(len(payload))+1+enc.EncodedLen(ed25519.SignatureSize))
	buf = append(buf, header...)
	buf = enc.AppendEncode(buf, payload)
	sig := ed25519.Sign(sk.priv, buf)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), c.Expiry, nil
}

// JWKS returns the JSON Web Key Set of every live key, this replica's and
// the others': {"keys":[...]}, oldest first.
func (s *Signer) JWKS() []byte {
	ks, now := s.keys.Load(), s.now()
	out := []byte(`{"keys":[`)
	first := true
	for _, k := range ks.ordered {
		if !k.live(now) {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		out = append(out, k.jwk...)
		first = false
	}
	return append(out, "]}"...)
}

// Keys describes every live key, oldest first.
func (s *Signer) Keys() []SigningKey {
	ks, now := s.keys.Load(), s.now()
	var out []SigningKey
	for _, k := range ks.ordered {
		if !k.live(now) {
			continue
		}
		var retires *time.Time
		if k.retires != nil {
			r := *k.retires // the caller's copy, not the snapshot's
			retires = &r
		}
		out = append(out, SigningKey{
			ID:        k.kid,
			Algorithm: signingAlg,
			Created:   k.created,
			Retires:   retires,
			Signing:   ks.signing != nil && ks.signing.kid == k.kid,
			Local:     k.local,
		})
	}
	return out
}

// Rotate creates a new key and signs with it from now on. The previous
// keys go on verifying until MaxTTL+1m from now, when they retire.
func (s *Signer) Rotate(ctx context.Context) (SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.createKey()
	if err != nil {
		return SigningKey{}, err
	}
	// Publish before signing with it, so that other replicas know the key
	// as soon as they can.
	if err := s.publish(ctx, k); err != nil {
		delete(s.local, k.kid)
		_ = os.Remove(filepath.Join(s.dir, k.kid+".jwk"))
		return SigningKey{}, err
	}
	if err := s.retireAllBut(k.kid); err != nil {
		return SigningKey{}, err
	}
	for _, old := range s.local {
		if old.kid != k.kid {
			if err := s.publish(ctx, old); err != nil {
				return SigningKey{}, err
			}
		}
	}
	s.rebuildLocked()
	s.cacheMu.Lock()
	clear(s.cache)
	s.cacheMu.Unlock()
	s.logger.InfoContext(ctx, "rotated signing key", "kid", k.kid)
	return SigningKey{ID: k.kid, Algorithm: signingAlg, Created: k.created, Signing: true, Local: true}, nil
}

// cachedToken is an identity token kept for reuse.
type cachedToken struct {
	token string
	exp   time.Time
	ttl   time.Duration
}

// IdentityToken returns a token for an upstream: c with aud set to aud,
// which must not be corral's issuer (such a token could be replayed against
// corral). ttl is 60s if 0. Tokens are cached by aud, ttl and every claim
// but the times and jti, and reused while more than half their ttl is left,
// so a hot path does not sign per call.
func (s *Signer) IdentityToken(aud string, c Claims, ttl time.Duration) (string, error) {
	if aud == "" || aud == s.issuer {
		return "", fmt.Errorf("identity: identity token: audience %q must name an upstream, not corral", aud)
	}
	if ttl == 0 {
		ttl = defaultIdentityTTL
	}
	if ttl < 0 || ttl > s.maxTTL {
		ttl = s.maxTTL
	}
	c.Audience = Audience{aud}
	c.IssuedAt, c.NotBefore, c.Expiry = 0, 0, 0
	keyJSON, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("identity: identity token: %w", err)
	}
	key := ttl.String() + " " + string(keyJSON)
	now := s.now()
	s.cacheMu.Lock()
	e, ok := s.cache[key]
	s.cacheMu.Unlock()
	if ok && e.exp.Sub(now) > e.ttl/2 {
		return e.token, nil
	}
	token, exp, err := s.mint(c, ttl)
	if err != nil {
		return "", err
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if len(s.cache) >= maxCachedTokens {
		s.evictLocked(now)
	}
	s.cache[key] = cachedToken{token: token, exp: time.Unix(exp, 0), ttl: ttl}
	return token, nil
}

// evictLocked drops the cached tokens too old to reuse and, if that is not
// enough, arbitrary others until the cache has room.
func (s *Signer) evictLocked(now time.Time) {
	for k, e := range s.cache {
		if e.exp.Sub(now) <= e.ttl/2 {
			delete(s.cache, k)
		}
	}
	for k := range s.cache {
		if len(s.cache) < maxCachedTokens {
			break
		}
		delete(s.cache, k)
	}
}
