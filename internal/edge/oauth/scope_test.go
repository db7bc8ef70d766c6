package oauth

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
)

func TestAllows(t *testing.T) {
	for _, tt := range []struct {
		granted, requested string
		want               bool
	}{
		{"tool:erp.*", "tool:erp.*", true},
		{"tool:erp.*", "tool:erp.get_order", true},
		{"tool:erp.*", "tool:erp.get_*", false}, // a narrower glob is not one of the patterns
		{"tool:erp.*", "tool:erp.get_?", false},
		{"tool:erp.*", "model:erp.get_order", false},
		{"model:gpt-?o", "model:gpt-4o", true},
		{"tool:erp.get_order", "tool:erp.get_order", true},
		{"tool:erp.get_order", "tool:erp.get_orders", false},
		{"tool:*", "tool:anything.at_all", true},
		{"tool:*", "model:x", false},
		{"tool:erp.*", "tool:", false},
	} {
		if got := allows(tt.granted, tt.requested); got != tt.want {
			t.Errorf("allows(%q, %q) = %v, want %v", tt.granted, tt.requested, got, tt.want)
		}
	}
}

func TestCovers(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"tool:erp.*", "tool:erp.get_order", true},
		{"tool:erp.*", "tool:erp.get_*", true},
		{"tool:erp.get_*", "tool:erp.*", false},
		{"tool:*", "tool:erp.*", true},
		{"tool:erp.?", "tool:erp.*", false}, // ? is one character, * any run
		{"tool:erp.?", "tool:erp.?", true},
		{"tool:erp.*", "tool:erp.?", true},
		{"tool:erp.get_?", "tool:erp.get_x", true},
		{"tool:erp.*", "model:erp.x", false},
		{"tool:erp.get_*", "tool:*.get_order", false}, // overlapping, neither contains the other
		{"nonsense", "nonsense", true},
		{"nonsense", "tool:x", false},
	} {
		if got := covers(tt.a, tt.b); got != tt.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestIntersect(t *testing.T) {
	for _, tt := range []struct {
		prev, next, want string
	}{
		{"tool:erp.*", "tool:erp.get_order tool:crm.x", "tool:erp.get_order"},
		{"tool:erp.get_order tool:crm.get_customer", "tool:erp.* tool:crm.*", "tool:erp.get_order tool:crm.get_customer"},
		{"tool:erp.get_*", "tool:*.get_order", ""},
		{"tool:erp.*", "tool:erp.* tool:erp.get_order", "tool:erp.* tool:erp.get_order"},
		{"model:gpt-4o", "model:gpt-*", "model:gpt-4o"},
		{"", "tool:erp.*", ""},
		{"tool:erp.*", "", ""},
	} {
		got := strings.Join(intersect(strings.Fields(tt.prev), strings.Fields(tt.next)), " ")
		if got != tt.want {
			t.Errorf("intersect(%q, %q) = %q, want %q", tt.prev, tt.next, got, tt.want)
		}
	}
}

func TestParseScope(t *testing.T) {
	for _, tt := range []struct {
		scope string
		want  string // the items, or "!" and part of the error
	}{
		{"", ""},
		{"tool:a model:b tool:a", "tool:a model:b"},
		{"\ttool:a\n", "tool:a"},
		{"tool:", "!not tool:<name>"},
		{"agent:x", "!not tool:<name>"},
		{"tool:a\\b", "!not tool:<name>"},
		{"tool:é", "!not tool:<name>"},
		{strings.Repeat("tool:x ", 257), "!more than 256"},
	} {
		items, fail := parseScope(tt.scope)
		got := strings.Join(items, " ")
		if fail != nil {
			got = "!" + fail.Description
		}
		if want, isErr := strings.CutPrefix(tt.want, "!"); isErr && !strings.Contains(got, want) || !isErr && got != tt.want {
			t.Errorf("parseScope(%q) = %q, want %q", tt.scope, got, tt.want)
		}
	}
}

func TestAgentScope(t *testing.T) {
	spec := &config.AgentSpec{Tools: []string{"erp.*", "erp.*", "crm.get"}, Models: []string{"gpt-4o"}}
	if got, want := agentScope(spec), []string{"tool:erp.*", "tool:crm.get", "model:gpt-4o"}; !slices.Equal(got, want) {
		t.Errorf("agentScope(%v) = %v, want %v", spec, got, want)
	}
}

func TestTarget(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{GrantClientCredentials, "client_credentials"},
		{GrantTokenExchange, "token_exchange"},
		{"password", "password"},
		{strings.Repeat("é", 40), strings.Repeat("é", 32)}, // 64 bytes, whole runes
		{strings.Repeat("x", 63) + "é", strings.Repeat("x", 63)},
		{"a\xffb", "a\uFFFDb"},
	} {
		if got := target(tt.in); got != tt.want {
			t.Errorf("target(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCapTTL(t *testing.T) {
	w := newWorld(t)
	w.h.now = func() time.Time { return testNow.Add(300 * time.Millisecond) }
	for _, tt := range []struct {
		exp    int64
		want   time.Duration
		reason identity.Reason
	}{
		{testNow.Add(time.Hour).Unix(), 15 * time.Minute, ""},
		{testNow.Add(10 * time.Minute).Unix(), 10*time.Minute - time.Second, ""}, // rounded down, never past exp
		{testNow.Add(2 * time.Second).Unix(), time.Second, ""},
		{testNow.Add(time.Second).Unix(), 0, identity.ReasonExpired},
		{0, 0, identity.ReasonMissingClaim},
	} {
		got, fail := w.h.capTTL(tt.exp)
		var reason identity.Reason
		if fail != nil {
			reason = fail.Reason
		}
		if got != tt.want || reason != tt.reason {
			t.Errorf("capTTL(%d) = %v, %q; want %v, %q", tt.exp, got, reason, tt.want, tt.reason)
		}
	}
}

func TestChain(t *testing.T) {
	b := &identity.Actor{Subject: "b"}
	for _, tt := range []struct {
		agent string
		prev  *identity.Actor
		want  string
	}{
		{"a", nil, "a"},
		{"a", b, "a>b"},
		{"b", b, "b"},
		{"a", &identity.Actor{Subject: "c", Act: b}, "a>c>b"},
	} {
		var names []string
		for a := chain(tt.agent, tt.prev); a != nil; a = a.Act {
			names = append(names, a.Subject)
		}
		if got := strings.Join(names, ">"); got != tt.want {
			t.Errorf("chain(%q, %+v) = %s, want %s", tt.agent, tt.prev, got, tt.want)
		}
	}
}

func TestPeek(t *testing.T) {
	for _, tt := range []struct {
		token string
		want  unverified
		ok    bool
	}{
		{"eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2EiLCJleHAiOjEwfQ.", unverified{Issuer: "https://a", Expiry: 10}, true},
		{"a.b", unverified{}, false},
		{"a.!!.c", unverified{}, false},
		{"a.bm90IGpzb24.c", unverified{}, false},
		{"a.eyJpc3MiOjF9.c", unverified{}, false}, // iss not a string
	} {
		got, ok := peek(tt.token)
		if got != tt.want || ok != tt.ok {
			t.Errorf("peek(%q) = %+v, %v; want %+v, %v", tt.token, got, ok, tt.want, tt.ok)
		}
	}
}
