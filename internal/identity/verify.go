package identity

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
)

const (
	// maxTokenSize bounds what is parsed at all: no token corral deals in
	// comes near it.
	maxTokenSize = 16 << 10
	// leeway is the clock skew allowed, in seconds, both ways: for exp, and
	// for nbf and iat in the future.
	leeway = 30
)

// b64 decodes base64url without padding, refusing non-canonical encodings
// so that no two spellings of a token carry the same signature.
var b64 = base64.RawURLEncoding.Strict()

// jwsHeader is the part of a JWS protected header corral reads.
type jwsHeader struct {
	Alg  string   `json:"alg"`
	Kid  string   `json:"kid"`
	Typ  string   `json:"typ"`
	Crit []string `json:"crit"`
}

// compactJWS is a compact JWS split into its parts, header decoded.
type compactJWS struct {
	header       jwsHeader
	signingInput string // header.payload, as signed
	payload      string // base64url
	signature    string // base64url
}

// parseCompact splits and reads a compact JWS, and refuses the algorithms
// that are never acceptable: alg none (any case) with alg_none, and any
// symmetric or unknown algorithm not in allowed with alg_not_allowed.
// It does not look at the payload.
func parseCompact(token string, allowed func(alg string) bool) (compactJWS, *TokenError) {
	var jws compactJWS
	if len(token) > maxTokenSize {
		return jws, Refused(ReasonMalformed, "token is larger than %d bytes", maxTokenSize)
	}
	h, rest, ok := strings.Cut(token, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(sig, ".") {
		return jws, Refused(ReasonMalformed, "not a compact JWS (three base64url parts separated by dots)")
	}
	raw, err := b64.DecodeString(h)
	if err != nil {
		return jws, Refused(ReasonMalformed, "header is not base64url")
	}
	if err := json.Unmarshal(raw, &jws.header); err != nil {
		return jws, Refused(ReasonMalformed, "header is not a JSON object")
	}
	switch alg := jws.header.Alg; {
	case alg == "":
		return jws, Refused(ReasonMalformed, "header has no alg")
	case strings.EqualFold(alg, "none"):
		return jws, Refused(ReasonAlgNone, "unsigned tokens (alg none) are refused")
	case !allowed(alg):
		return jws, Refused(ReasonAlgNotAllowed, "alg %q is not accepted", truncate(alg))
	}
	if len(jws.header.Crit) > 0 {
		return jws, Refused(ReasonMalformed, "critical header extensions are not supported")
	}
	jws.signingInput = token[:len(h)+1+len(payload)]
	jws.payload, jws.signature = payload, sig
	return jws, nil
}

// truncate keeps attacker-chosen text in details short.
func truncate(s string) string {
	const max = 40
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

func isEdDSA(alg string) bool { return alg == signingAlg }

// Verify checks a token corral signed, from memory: its signature against a
// live key of any replica, then its claims: iss is the Issuer, aud contains
// audience (the Issuer when audience is ""), it is within its lifetime
// (30s of leeway both ways), and sub, client_id and exp are present. Every
// refusal is a *TokenError whose Reason says why.
//
// A token verified in the last minute is not checked again in full: its
// claims come from a bounded cache, after its key's liveness and its
// lifetime are checked anew (a hosted agent's loop, or an agent reusing its
// token, presents the same token for every call).
func (s *Signer) Verify(token string, audience string) (*Claims, error) {
	key := verifiedKey{token: token, audience: audience}
	if v, ok := s.verified.Load(key); ok {
		e := v.(verifiedEntry)
		now := s.now()
		k := s.keys.Load().byKID[e.kid]
		if now.Sub(e.at) < verifiedFor && k != nil && k.live(now) {
			if terr := checkTimes(now, e.claims.Expiry, e.claims.NotBefore, e.claims.IssuedAt); terr != nil {
				return nil, terr
			}
			c := e.claims
			return &c, nil
		}
		s.verified.Delete(key)
	}
	c, kid, err := s.verify(token, audience)
	if err != nil {
		return nil, err
	}
	if s.verifiedCount.Add(1) > maxVerified {
		s.verified.Clear()
		s.verifiedCount.Store(1)
	}
	s.verified.Store(key, verifiedEntry{claims: *c, kid: kid, at: s.now()})
	return c, nil
}

// The cache of verified tokens: at most maxVerified, each for verifiedFor.
const (
	maxVerified = 8192
	verifiedFor = time.Minute
)

type verifiedKey struct{ token, audience string }

type verifiedEntry struct {
	claims Claims
	kid    string
	at     time.Time
}

// verify checks a token in full; it returns its claims and its key's id.
func (s *Signer) verify(token string, audience string) (*Claims, string, error) {
	jws, terr := parseCompact(token, isEdDSA)
	if terr != nil {
		return nil, "", terr
	}
	c, err := s.verifyParsed(jws, audience)
	return c, jws.header.Kid, err
}

func (s *Signer) verifyParsed(jws compactJWS, audience string) (*Claims, error) {
	now := s.now()
	if jws.header.Kid == "" {
		return nil, Refused(ReasonUnknownKey, "token has no kid")
	}
	k := s.keys.Load().byKID[jws.header.Kid]
	if k == nil || !k.live(now) {
		return nil, Refused(ReasonUnknownKey, "no live signing key %q", truncate(jws.header.Kid))
	}
	sig, err := b64.DecodeString(jws.signature)
	if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(k.pub, []byte(jws.signingInput), sig) {
		return nil, Refused(ReasonBadSignature, "signature does not match")
	}
	payload, err := b64.DecodeString(jws.payload)
	if err != nil {
		return nil, Refused(ReasonMalformed, "payload is not base64url")
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, Refused(ReasonMalformed, "claims are not a JSON object corral reads")
	}
	if c.Issuer != s.issuer {
		return nil, Refused(ReasonWrongIssuer, "token was not issued by %s", s.issuer)
	}
	if audience == "" {
		audience = s.issuer
	}
	if !c.Audience.Contains(audience) {
		return nil, Refused(ReasonWrongAudience, "token is not for %s", audience)
	}
	if c.Expiry == 0 {
		return nil, Refused(ReasonMissingClaim, "token has no exp")
	}
	if terr := checkTimes(now, c.Expiry, c.NotBefore, c.IssuedAt); terr != nil {
		return nil, terr
	}
	if c.Subject == "" {
		return nil, Refused(ReasonMissingClaim, "token has no sub")
	}
	if c.ClientID == "" {
		return nil, Refused(ReasonMissingClaim, "token has no client_id")
	}
	return &c, nil
}

// checkTimes checks exp, and nbf and iat when they are not 0, against now
// with the leeway.
func checkTimes(now time.Time, exp, nbf, iat int64) *TokenError {
	t := now.Unix()
	if t-leeway > exp { // so written, no exp overflows
		return Refused(ReasonExpired, "token expired at %s", time.Unix(exp, 0).UTC().Format(time.RFC3339))
	}
	if nbf != 0 && nbf > t+leeway {
		return Refused(ReasonNotYetValid, "token is not valid before %s", time.Unix(nbf, 0).UTC().Format(time.RFC3339))
	}
	if iat != 0 && iat > t+leeway {
		return Refused(ReasonNotYetValid, "token was issued in the future (%s)", time.Unix(iat, 0).UTC().Format(time.RFC3339))
	}
	return nil
}
