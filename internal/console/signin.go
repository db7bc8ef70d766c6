package console

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/audit"
)

// Failed sign-ins are limited per source address and per the name a
// credential claims, each by a GCRA shared by every replica: signInBurst
// failures in a row, then one more each signInPeriod. Past it, sign-ins
// from that address or for that name are refused (429 rate_limited with
// Retry-After) before the credential is even checked, right ones too:
// otherwise the limit would not slow a guesser down.
const (
	signInBurst  = 10
	signInPeriod = time.Minute
	// signInWindow is how long a counter matters after its last failure:
	// by then it has drained completely. It is the bucket's TTL.
	signInWindow = signInBurst * signInPeriod
	// signInTolerance is how far ahead of now a counter's theoretical
	// arrival time may be and still let a sign-in through.
	signInTolerance = (signInBurst - 1) * signInPeriod
	// maxSignInAttempts bounds the compare-and-swap loop on one counter.
	maxSignInAttempts = 16
	// maxClaimedName bounds the name taken from a credential.
	maxClaimedName = 512
	// maxSignInBytes bounds SignInBucket: strangers holding many addresses
	// write a counter each, and must not be able to fill the substrate.
	// It holds some 150,000 counters; past it, failures are still refused
	// but not counted until counters age out.
	maxSignInBytes = 32 << 20
)

// SignInBucket counts failed console sign-ins, shared by every replica.
const SignInBucket = "corral_console_signins"

// signInLimit counts failed sign-ins in SignInBucket.
type signInLimit struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// counter is one address's or name's count as stored: its theoretical
// arrival time (GCRA), unix nanoseconds.
type counter struct {
	TAT int64 `json:"tat"`
}

// wait returns how long a sign-in counted against keys must wait: 0 when
// it may be tried now.
func (l *signInLimit) wait(ctx context.Context, keys []string) (time.Duration, error) {
	now := l.now()
	var longest time.Duration
	for _, k := range keys {
		c, _, err := l.read(ctx, k)
		if err != nil {
			return 0, err
		}
		if w := time.Unix(0, c.TAT).Sub(now) - signInTolerance; w > longest {
			longest = w
		}
	}
	return longest, nil
}

// fail counts one failed sign-in against each of keys.
func (l *signInLimit) fail(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if err := l.add(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// add advances key's counter by one failure, retrying when another
// failure (on this replica or another) wrote it in between.
func (l *signInLimit) add(ctx context.Context, key string) error {
	for range maxSignInAttempts {
		c, rev, err := l.read(ctx, key)
		if err != nil {
			return err
		}
		now := l.now().UnixNano()
		c.TAT = max(c.TAT, now) + int64(signInPeriod)
		value, _ := json.Marshal(c) // one number: never fails
		if rev == 0 {
			_, err = l.kv.Create(ctx, key, value)
		} else {
			_, err = l.kv.Update(ctx, key, value, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("console: count failed sign-in: %w", err)
		}
	}
	return fmt.Errorf("console: count failed sign-in: %d writes in a row lost a race", maxSignInAttempts)
}

// read returns key's counter and revision (0: none).
func (l *signInLimit) read(ctx context.Context, key string) (counter, uint64, error) {
	e, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return counter{}, 0, nil
	}
	if err != nil {
		return counter{}, 0, fmt.Errorf("console: read failed sign-ins: %w", err)
	}
	var c counter
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		// Only a write from outside corral makes one: count from zero
		// again rather than refuse everyone.
		return counter{}, e.Revision(), nil
	}
	return c, e.Revision(), nil
}

// signInKeys are the counters a sign-in from remote (the TCP peer's
// host:port) with credential counts against: its source address (the
// host for IPv4, its /64 for IPv6), and the name the credential claims,
// when it claims one.
func signInKeys(remote, credential string) []string {
	keys := []string{"addr." + digest(audit.Source(remote).String())}
	if name := claimedName(credential); name != "" {
		keys = append(keys, "name."+digest(name))
	}
	return keys
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// claimedName is who a credential says it is before anything checks it:
// for a JWT, its issuer and subject, unverified. corral's admin tokens and
// human keys are random and name nobody until they verify, so they count
// against their address only.
func claimedName(credential string) string {
	parts := strings.Split(credential, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return ""
	}
	var claims struct {
		Issuer  string `json:"iss"`
		Subject string `json:"sub"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Subject == "" {
		return ""
	}
	name := claims.Issuer + " " + claims.Subject
	if len(name) > maxClaimedName {
		name = name[:maxClaimedName]
	}
	return name
}
