package approval

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"
)

// Rules say who may decide an approval and for how long: policy writes
// them as obligations (approvers, quorum, ttl) next to require_approval.
type Rules struct {
	// Approvers are groups; empty: any approver.
	Approvers []string
	// Quorum is how many distinct people must approve; at least 1.
	Quorum int
	// TTL is how long the approval stays pending before it expires.
	TTL time.Duration
}

// Defaults and bounds of the obligations.
const (
	DefaultQuorum = 1
	DefaultTTL    = time.Hour
	MaxQuorum     = 10
	MinTTL        = time.Second
	MaxTTL        = 30 * 24 * time.Hour
	maxApprovers  = 32
)

var groupName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$`)

// ParseRules reads the approval obligations of a policy decision:
// "approvers" (a group name or a list of them), "quorum" (an integer from
// 1 to 10) and "ttl" (a Go duration such as "4h", from 1s to 720h). Absent
// keys take the defaults: any approver, 1, one hour. Other obligation keys
// are other stages' and are ignored. The error names the bad key.
func ParseRules(obligations map[string]any) (Rules, error) {
	r := Rules{Quorum: DefaultQuorum, TTL: DefaultTTL}
	if v, ok := obligations["approvers"]; ok {
		switch x := v.(type) {
		case string:
			r.Approvers = []string{x}
		case []any:
			if len(x) > maxApprovers {
				return Rules{}, fmt.Errorf("obligation approvers: %d groups; at most %d", len(x), maxApprovers)
			}
			for i, g := range x {
				s, ok := g.(string)
				if !ok {
					return Rules{}, fmt.Errorf("obligation approvers[%d]: want a group name (a string), got %s", i, typeName(g))
				}
				r.Approvers = append(r.Approvers, s)
			}
		case []string:
			r.Approvers = append(r.Approvers, x...)
		default:
			return Rules{}, fmt.Errorf("obligation approvers: want a group name or a list of them, got %s", typeName(v))
		}
		for _, g := range r.Approvers {
			if !groupName.MatchString(g) {
				return Rules{}, fmt.Errorf("obligation approvers: %q is not a group name (letters, digits and _.:@/-, at most 128)", clip(g))
			}
		}
	}
	if v, ok := obligations["quorum"]; ok {
		q, ok := integer(v)
		if !ok || q < 1 || q > MaxQuorum {
			return Rules{}, fmt.Errorf("obligation quorum: want an integer from 1 to %d, got %s", MaxQuorum, clip(fmt.Sprint(v)))
		}
		r.Quorum = int(q)
	}
	if v, ok := obligations["ttl"]; ok {
		s, ok := v.(string)
		if !ok {
			return Rules{}, fmt.Errorf("obligation ttl: want a duration such as \"4h\", got %s", typeName(v))
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < MinTTL || d > MaxTTL {
			return Rules{}, fmt.Errorf("obligation ttl: want a duration from %s to %s such as \"4h\", got %q", MinTTL, MaxTTL, clip(s))
		}
		r.TTL = d
	}
	return r, nil
}

// integer accepts the numbers policy produces: json.Number (OPA's), float
// and int kinds, when whole.
func integer(v any) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		n, err := x.Int64()
		return n, err == nil
	case float64:
		if x != float64(int64(x)) {
			return 0, false
		}
		return int64(x), true
	case int:
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64, int, int64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// clip bounds what a message quotes of policy's output.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
