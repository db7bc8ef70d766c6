package audit

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Unauthenticated refusals reach the audit at most this fast per source
// address; past it they are counted (Refusals.Suppressed) and one record a
// second stands for them, its Sampled field saying how many. A stranger
// cannot grow the audit faster than that, whatever it sends.
const (
	RefusalRate  = 5.0 // records per second, per address
	RefusalBurst = 20.0
	// RefusalSample is how often a record is stored for refusals past the
	// rate.
	RefusalSample = time.Second
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
	mu         sync.Mutex
	addrs      map[netip.Prefix]*refusalBucket
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
	key := addrKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(key, now)
	b.tokens = min(RefusalBurst, b.tokens+now.Sub(b.last).Seconds()*RefusalRate)
	b.last = now
	if b.tokens < 1 && now.Sub(b.sampled) < RefusalSample {
		b.suppressed++
		l.suppressed.Add(1)
		return false, 0
	}
	if b.tokens >= 1 {
		b.tokens--
	} else {
		b.sampled = now
	}
	count = b.suppressed + 1
	b.suppressed = 0
	return true, count
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
		// A bucket that would be full again, with nothing suppressed, holds
		// nothing worth keeping.
		idle := time.Duration(RefusalBurst / RefusalRate * float64(time.Second))
		for k, b := range l.addrs {
			if now.Sub(b.last) > idle && b.suppressed == 0 {
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

// addrKey is the source an address counts against: the host for IPv4, its
// /64 for IPv6 (one host commonly holds a whole /64), and the zero prefix
// for an address that cannot be parsed.
func addrKey(addr string) netip.Prefix {
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
