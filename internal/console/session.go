package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// Session lifetimes: a session ends after idleTTL without a request, and
// after maxTTL whatever happens; a trusted Issuer's token ends it sooner.
const (
	idleTTL     = 30 * time.Minute
	maxTTL      = 12 * time.Hour
	maxSessions = 10000
)

// session is a signed-in person. The credential stays on the server: the
// browser holds only the session id (an HttpOnly cookie) and the CSRF
// token (in memory, sent back as a header on every change).
type session struct {
	person     Person
	credential string
	csrf       string
	created    time.Time
	seen       time.Time
	expires    time.Time
}

// sessions holds the console's sessions in memory, keyed by the SHA-256
// of the cookie's value so that a lookup does not compare secrets.
type sessions struct {
	mu  sync.Mutex
	m   map[[32]byte]*session
	now func() time.Time
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{m: map[[32]byte]*session{}, now: now}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sessionKey(id string) [32]byte { return sha256.Sum256([]byte(id)) }

// create starts a session for p and returns its id.
func (s *sessions) create(p Person, credential string, expiry time.Time) (string, *session) {
	now := s.now()
	id := randomToken()
	se := &session{person: p, credential: credential, csrf: randomToken(), created: now, seen: now, expires: now.Add(maxTTL)}
	if !expiry.IsZero() && expiry.Before(se.expires) {
		se.expires = expiry
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	if len(s.m) >= maxSessions {
		// Full: drop the oldest rather than refuse every new sign-in.
		var oldest [32]byte
		var at time.Time
		for k, v := range s.m {
			if at.IsZero() || v.seen.Before(at) {
				oldest, at = k, v.seen
			}
		}
		delete(s.m, oldest)
	}
	s.m[sessionKey(id)] = se
	return id, se
}

// get returns the live session id names, and marks it seen.
func (s *sessions) get(id string) (*session, bool) {
	if id == "" {
		return nil, false
	}
	now := s.now()
	k := sessionKey(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.m[k]
	if !ok {
		return nil, false
	}
	if now.After(se.expires) || now.Sub(se.seen) > idleTTL {
		delete(s.m, k)
		return nil, false
	}
	se.seen = now
	cp := *se
	return &cp, true
}

// peek returns the live session id names, without marking it seen.
func (s *sessions) peek(id string) (*session, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.m[sessionKey(id)]
	if !ok || now.After(se.expires) || now.Sub(se.seen) > idleTTL {
		return nil, false
	}
	cp := *se
	return &cp, true
}

// end forgets the session: its cookie no longer signs anyone in.
func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sessionKey(id))
}

// expire drops ended sessions; s.mu is held.
func (s *sessions) expire(now time.Time) {
	for k, se := range s.m {
		if now.After(se.expires) || now.Sub(se.seen) > idleTTL {
			delete(s.m, k)
		}
	}
}

// checkCSRF reports whether token is the session's CSRF token.
func (se *session) checkCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(se.csrf)) == 1
}
