package ratelimit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ThrottleBucket holds the upstreams and models that answered 429, keyed
// "<kind>.<token>" (tool.v<base64 source>, model.v<base64 model>), with
// until when they asked corral to wait. Every replica mirrors it, so none
// calls a throttled backend on behalf of its agents until then.
const ThrottleBucket = "corral_throttles"

// The kinds of throttled backend.
const (
	ThrottleSource = "tool" // a ToolSource's upstream
	ThrottleModel  = "model"
)

// DefaultThrottle is how long a backend that answered 429 without a
// Retry-After is left alone; MaxThrottle caps what a backend may ask, so
// that one wrong header does not stop corral calling it for a day.
const (
	DefaultThrottle = time.Second
	MaxThrottle     = 10 * time.Minute
)

// throttled is a throttle as stored.
type throttled struct {
	Until time.Time `json:"until"`
}

// Throttle marks a backend as throttling corral for d (DefaultThrottle when
// d is not positive, at most MaxThrottle), on this replica at once and on
// the others through the bucket. It returns how long it was marked for.
func (l *Limits) Throttle(ctx context.Context, kind, name string, d time.Duration) (time.Duration, error) {
	switch {
	case d <= 0:
		d = DefaultThrottle
	case d > MaxThrottle:
		d = MaxThrottle
	}
	until := l.now().Add(d)
	key := kind + "." + keyToken(name)
	l.noteThrottle(key, until)
	data, err := json.Marshal(throttled{Until: until.UTC()})
	if err != nil {
		return d, fmt.Errorf("ratelimit: encode throttle: %w", err)
	}
	if _, err := l.throttleKV.Put(ctx, key, data); err != nil {
		return d, fmt.Errorf("ratelimit: share throttle of %s %s: %w", kind, name, err)
	}
	return d, nil
}

// Throttled reports whether a backend is throttling corral, and for how
// much longer.
func (l *Limits) Throttled(kind, name string) (time.Duration, bool) {
	v, ok := l.throttles.Load(kind + "." + keyToken(name))
	if !ok {
		return 0, false
	}
	left := v.(time.Time).Sub(l.now())
	return left, left > 0
}

// noteThrottle keeps the later of two ends for a key.
func (l *Limits) noteThrottle(key string, until time.Time) {
	for {
		v, loaded := l.throttles.LoadOrStore(key, until)
		if !loaded {
			return
		}
		old := v.(time.Time)
		if !until.After(old) || l.throttles.CompareAndSwap(key, old, until) {
			return
		}
	}
}

// applyThrottle mirrors one entry of the throttle bucket.
func (l *Limits) applyThrottle(ctx context.Context, e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		l.throttles.Delete(e.Key())
		return
	}
	var t throttled
	if err := json.Unmarshal(e.Value(), &t); err != nil || !strings.Contains(e.Key(), ".") {
		l.logger.WarnContext(ctx, "ratelimit: unreadable throttle entry ignored", "key", e.Key(), "err", err)
		return
	}
	if t.Until.After(l.now().Add(MaxThrottle)) {
		t.Until = l.now().Add(MaxThrottle)
	}
	l.noteThrottle(e.Key(), t.Until)
}
