package trigger

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// maxSignatureHeader bounds a signature header: a parser never works
// through more than this.
const maxSignatureHeader = 2048

// maxStripeSignatures bounds the v1 entries of a Stripe-Signature (Stripe
// sends one per active secret, during a rotation two).
const maxStripeSignatures = 8

// ParseGitHub parses GitHub's X-Hub-Signature-256 value, "sha256=<hex>",
// into the MAC.
func ParseGitHub(h string) ([]byte, error) {
	if len(h) > maxSignatureHeader {
		return nil, errors.New("signature header too long")
	}
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(h), "sha256=")
	if !ok {
		return nil, errors.New(`want "sha256=<hex>"`)
	}
	return decodeMAC(hexSig, false)
}

// ParseStripe parses Stripe's Stripe-Signature value,
// "t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=...]", into the timestamp
// and the v1 MACs (other schemes are ignored, as Stripe says to).
func ParseStripe(h string) (ts int64, sigs [][]byte, err error) {
	if len(h) > maxSignatureHeader {
		return 0, nil, errors.New("signature header too long")
	}
	seenT := false
	for part := range strings.SplitSeq(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return 0, nil, fmt.Errorf("%q is not key=value", part)
		}
		switch k {
		case "t":
			if seenT {
				return 0, nil, errors.New("two timestamps")
			}
			seenT = true
			ts, err = strconv.ParseInt(v, 10, 64)
			if err != nil || ts <= 0 {
				return 0, nil, errors.New("t is not a Unix time")
			}
		case "v1":
			if len(sigs) == maxStripeSignatures {
				return 0, nil, fmt.Errorf("more than %d v1 signatures", maxStripeSignatures)
			}
			mac, err := decodeMAC(v, false)
			if err != nil {
				return 0, nil, fmt.Errorf("v1: %w", err)
			}
			sigs = append(sigs, mac)
		}
	}
	if !seenT {
		return 0, nil, errors.New("no t=<timestamp>")
	}
	if len(sigs) == 0 {
		return 0, nil, errors.New("no v1=<signature>")
	}
	return ts, sigs, nil
}

// ParseHMAC parses a generic signature value: the MAC in hex or base64,
// optionally prefixed "sha256=" (GitHub's form) or "v1," (Standard
// Webhooks' form), and several separated by spaces (a rotation).
func ParseHMAC(h string) ([][]byte, error) {
	if len(h) > maxSignatureHeader {
		return nil, errors.New("signature header too long")
	}
	var out [][]byte
	for f := range strings.FieldsSeq(h) {
		if len(out) == maxStripeSignatures {
			return nil, fmt.Errorf("more than %d signatures", maxStripeSignatures)
		}
		f = strings.TrimPrefix(f, "sha256=")
		f = strings.TrimPrefix(f, "v1,")
		mac, err := decodeMAC(f, true)
		if err != nil {
			return nil, err
		}
		out = append(out, mac)
	}
	if len(out) == 0 {
		return nil, errors.New("empty signature")
	}
	return out, nil
}

// decodeMAC decodes a SHA-256 MAC from hex (or, with b64, base64): it
// must be exactly 32 bytes, so a truncated signature is malformed rather
// than compared.
func decodeMAC(s string, b64 bool) ([]byte, error) {
	if len(s) == 2*sha256.Size {
		if mac, err := hex.DecodeString(s); err == nil {
			return mac, nil
		}
	}
	if b64 {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			if mac, err := enc.DecodeString(s); err == nil && len(mac) == sha256.Size {
				return mac, nil
			}
		}
		return nil, errors.New("not a SHA-256 MAC in hex or base64")
	}
	return nil, errors.New("not a SHA-256 MAC in hex (64 digits)")
}

// sign is HMAC-SHA256 of the parts, concatenated, under secret.
func sign(secret []byte, parts ...[]byte) []byte {
	mac := hmac.New(sha256.New, secret)
	for _, p := range parts {
		mac.Write(p)
	}
	return mac.Sum(nil)
}

// anyEqual reports, in time independent of where they differ, whether one
// of the candidates is want.
func anyEqual(want []byte, candidates [][]byte) bool {
	ok := false
	for _, c := range candidates {
		if hmac.Equal(want, c) {
			ok = true
		}
	}
	return ok
}

// SignGitHub returns the X-Hub-Signature-256 value GitHub sends for body:
// for senders corral's demo world plays, and for tests.
func SignGitHub(secret string, body []byte) string {
	return "sha256=" + hex.EncodeToString(sign([]byte(secret), body))
}

// SignStripe returns the Stripe-Signature value Stripe sends for body
// signed at t.
func SignStripe(secret string, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(sign([]byte(secret), []byte(ts), []byte("."), body))
}
