package audit

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Unauthenticated refusals reach the audit at most this fast per source
// address, and at most RefusalGlobalRate for all addresses together; past
// either they are counted (Refusals.Suppressed) and one record a second
// stands for them, its Sampled field saying how many of its address's. A
// stranger cannot grow the audit faster than that, whatever it sends and
// from however many addresses.
const (
	RefusalRate  = 5.0 // records per second, per address
	RefusalBurst = 20.0
	// RefusalSample is how often a record is stored for refusals past the
	// rate.
	RefusalSample = time.Second
	// RefusalGlobalRate and RefusalGlobalBurst bound the records of
	// unauthenticated refusals from all addresses together: an attacker
	// holding many addresses (an IPv6 /48 is 65,536 /64s) grows the audit
	// no faster than that, about 10 KB/s at the records' bounded size.
	// Past it, refusals are only counted, and one record a RefusalSample
	// (for all addresses) stands for them.
	RefusalGlobalRate  = 10.0
	RefusalGlobalBurst = 100.0
	// maxRefusalAddrs bounds the addresses tracked; past it, the ones that
	// did not refuse for a while are forgotten, and if none, every new
	// address shares one bucket.
	maxRefusalAddrs = 4096
)

// Refusals decides which unauthenticated refusals are stored. Every edge
// that refuses strangers shares one (the pipeline and the token endpoint),
// so the bound holds per address whichever door is knocked on. The zero
// value is ready to use.
type Refusals struct {
	mu    sync.Mutex
	addrs map[netip.Prefix]*refusalBucket
	// all is the bucket every address draws from as well; its tokens are
	// initialised on first use.
	all        refusalBucket
	allStarted bool
	suppressed atomic.Uint64
}

// Suppressed counts the refusals not stored one by one.
func (l *Refusals) Suppressed() uint64 { return l.suppressed.Load() }

type refusalBucket struct {
	tokens float64
	last   time.Time // of the last refill
	// suppressed counts the refusals not stored since the last record.
	suppressed int
	sampled    time.Time // when the last record of suppressed ones was stored
}

// Admit reports whether an unauthenticated refusal from addr (host:port, as
// an edge saw it) at now is stored, and how many refusals its record stands
// for (1 when none was suppressed before it): set Record.Sampled to it.
func (l *Refusals) Admit(addr string, now time.Time) (store bool, count int) {
	key := Source(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(key, now)
	refill(b, now, RefusalRate, RefusalBurst)
	if !l.allStarted {
		l.all, l.allStarted = refusalBucket{tokens: RefusalGlobalBurst, last: now}, true
	}
	refill(&l.all, now, RefusalGlobalRate, RefusalGlobalBurst)
	// Both the address and all addresses together must let the record
	// through, each by a token or by its once-a-RefusalSample sample.
	if !b.admits(now) || !l.all.admits(now) {
		b.suppressed++
		l.suppressed.Add(1)
		return false, 0
	}
	b.take(now)
	l.all.take(now)
	count = b.suppressed + 1
	b.suppressed = 0
	return true, count
}

// refill adds the tokens earned since the bucket's last refill.
func refill(b *refusalBucket, now time.Time, rate, burst float64) {
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
}

// admits reports whether the bucket lets a record through at now: it holds
// a token, or its last sample is a RefusalSample old.
func (b *refusalBucket) admits(now time.Time) bool {
	return b.tokens >= 1 || now.Sub(b.sampled) >= RefusalSample
}

// take spends what admits found: a token, else the sample.
func (b *refusalBucket) take(now time.Time) {
	if b.tokens >= 1 {
		b.tokens--
	} else {
		b.sampled = now
	}
}

// bucket returns key's bucket, making room for it if need be.
func (l *Refusals) bucket(key netip.Prefix, now time.Time) *refusalBucket {
	if b, ok := l.addrs[key]; ok {
		return b
	}
	if l.addrs == nil {
		l.addrs = make(map[netip.Prefix]*refusalBucket)
	}
	if len(l.addrs) >= maxRefusalAddrs {
		// A bucket that would be full again holds nothing worth keeping
		// but its count of suppressed refusals, which Suppressed keeps
		// (with the global cap, most addresses of a flood have one).
		idle := time.Duration(RefusalBurst / RefusalRate * float64(time.Second))
		for k, b := range l.addrs {
			if now.Sub(b.last) > idle {
				delete(l.addrs, k)
			}
		}
		if len(l.addrs) >= maxRefusalAddrs {
			key = netip.Prefix{} // everyone new shares one bucket
			if b, ok := l.addrs[key]; ok {
				return b
			}
		}
	}
	b := &refusalBucket{tokens: RefusalBurst, last: now}
	l.addrs[key] = b
	return b
}

// Source is the source an address counts against: the host for IPv4, its
// /64 for IPv6 (one host commonly holds a whole /64), and the zero prefix
// for an address that cannot be parsed.
func Source(addr string) netip.Prefix {
	ap, err := netip.ParseAddrPort(addr)
	var ip netip.Addr
	if err == nil {
		ip = ap.Addr()
	} else if ip, err = netip.ParseAddr(addr); err != nil {
		return netip.Prefix{}
	}
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}
