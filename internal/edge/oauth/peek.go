package oauth

import (
	"encoding/base64"
	"encoding/json"
	"strings"
)

// unverified are the claims read from a JWT before anything checks it:
// good for deciding which verifier to ask, never for trusting.
type unverified struct {
	Issuer string `json:"iss"`
	Expiry int64  `json:"exp"`
}

// peek reads a compact JWS's claims without verifying it.
func peek(token string) (unverified, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return unverified{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return unverified{}, false
	}
	var c unverified
	if err := json.Unmarshal(payload, &c); err != nil {
		return unverified{}, false
	}
	return c, true
}
