package a2a

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/problem"
)

var chainCases = []struct {
	name, metadata string
	want           []string
	err            string
}{
	{"absent", ``, nil, ""},
	{"no key", `{"other": 1}`, nil, ""},
	{"null", `{"corral.dev/chain": null}`, nil, ""},
	{"empty", `{"corral.dev/chain": []}`, []string{}, ""},
	{"two", `{"corral.dev/chain": ["planner", "impact-eu"]}`, []string{"planner", "impact-eu"}, ""},
	{"not an object", `[1]`, nil, "metadata: an object"},
	{"a string", `{"corral.dev/chain": "planner"}`, nil, "an array of agent names"},
	{"numbers", `{"corral.dev/chain": [1, 2]}`, nil, "an array of agent names"},
	{"path", `{"corral.dev/chain": ["../admin"]}`, nil, "is not an agent name"},
	{"upper case", `{"corral.dev/chain": ["Planner"]}`, nil, "is not an agent name"},
	{"unicode", `{"corral.dev/chain": ["plänner"]}`, nil, "is not an agent name"},
	{"too long", `{"corral.dev/chain": [` + strings.Repeat(`"a",`, 64) + `"a"]}`, nil, "over the limit"},
}

func TestParseChain(t *testing.T) {
	for _, c := range chainCases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseChain(json.RawMessage(c.metadata))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("ParseChain(%s) = %v, %v; want error %q", c.metadata, got, err, c.err)
				}
				return
			}
			if err != nil || strings.Join(got, ",") != strings.Join(c.want, ",") || (got == nil) != (c.want == nil) {
				t.Fatalf("ParseChain(%s) = %#v, %v; want %#v", c.metadata, got, err, c.want)
			}
		})
	}
}

func TestCheckChain(t *testing.T) {
	cases := []struct {
		chain  []string
		agent  string
		code   string
		detail string
	}{
		{nil, "a", "", ""},
		{[]string{"a", "b"}, "c", "", ""},
		{[]string{"a", "b"}, "a", problem.AgentCycle, "a → b → a"},
		{[]string{"x", "a", "b"}, "b", problem.AgentCycle, "x → a → b → b"},
		{[]string{"a", "b", "c", "d"}, "e", "", ""},
		{[]string{"a", "b", "c", "d", "e"}, "f", problem.AgentDepth, "6 agents deep"},
	}
	for _, c := range cases {
		err := CheckChain(c.chain, c.agent)
		var pe *problem.Error
		if c.code == "" {
			if err != nil {
				t.Errorf("CheckChain(%v, %s) = %v, want nil", c.chain, c.agent, err)
			}
			continue
		}
		if !errors.As(err, &pe) || pe.Code != c.code || !strings.Contains(pe.Detail, c.detail) {
			t.Errorf("CheckChain(%v, %s) = %v, want %s naming %q", c.chain, c.agent, err, c.code, c.detail)
		}
	}
}

func TestAbove(t *testing.T) {
	for _, c := range []struct{ chain, want []string }{
		{nil, nil},
		{[]string{"impact"}, []string{}},
		{[]string{"planner", "impact"}, []string{"planner"}},
		{[]string{"impact", "planner"}, []string{"impact", "planner"}},
		{[]string{"impact", "impact"}, []string{"impact"}},
	} {
		if got := Above(c.chain, "impact"); strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("Above(%v, impact) = %v, want %v", c.chain, got, c.want)
		}
	}
}

func TestWithChainKeepsOtherMetadata(t *testing.T) {
	md := WithChain(json.RawMessage(`{"trace":"abc"}`), []string{"planner"})
	got, err := ParseChain(md)
	if err != nil || len(got) != 1 || got[0] != "planner" || !strings.Contains(string(md), `"trace":"abc"`) {
		t.Fatalf("WithChain = %s (%v, %v)", md, got, err)
	}
}

var requestCases = []struct {
	name, body string
	code       int
}{
	{"ok", `{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"x"}}`, 0},
	{"string id", `{"jsonrpc":"2.0","id":"a-1","method":"GetTask"}`, 0},
	{"no id", `{"jsonrpc":"2.0","method":"GetTask"}`, 0},
	{"truncated", `{"jsonrpc":"2.0","id":1,"method":`, codeParseError},
	{"not json", `GetTask`, codeParseError},
	{"empty", ``, codeParseError},
	{"batch", `[{"jsonrpc":"2.0","id":1,"method":"GetTask"}]`, codeInvalidRequest},
	{"version 1", `{"jsonrpc":"1.0","id":1,"method":"GetTask"}`, codeInvalidRequest},
	{"object id", `{"jsonrpc":"2.0","id":{},"method":"GetTask"}`, codeInvalidRequest},
	{"bool id", `{"jsonrpc":"2.0","id":true,"method":"GetTask"}`, codeInvalidRequest},
	{"no method", `{"jsonrpc":"2.0","id":1}`, codeInvalidRequest},
	{"method a number", `{"jsonrpc":"2.0","id":1,"method":5}`, codeInvalidRequest},
	{"params a list", `{"jsonrpc":"2.0","id":1,"method":"GetTask","params":[1]}`, codeInvalidParams},
	{"two objects", `{"jsonrpc":"2.0","id":1,"method":"GetTask"}{}`, codeParseError},
}

func TestDecodeRequest(t *testing.T) {
	for _, c := range requestCases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeRequest([]byte(c.body))
			got := 0
			if err != nil {
				got = err.Code
			}
			if got != c.code {
				t.Errorf("decodeRequest(%s) = %v, want code %d", c.body, err, c.code)
			}
		})
	}
}

func TestPublic(t *testing.T) {
	for addr, want := range map[string]bool{
		"93.184.216.34": true, "2606:2800:220:1:248:1893:25c8:1946": true, "8.8.8.8": true,
		"127.0.0.1": false, "127.1.2.3": false, "::1": false, "0.0.0.0": false, "::": false,
		"10.0.0.1": false, "172.16.5.4": false, "192.168.1.1": false, "169.254.169.254": false,
		"fe80::1": false, "fc00::1": false, "fd00:ec2::254": false, "100.64.0.1": false,
		"::ffff:127.0.0.1": false, "::ffff:169.254.169.254": false, "64:ff9b::7f00:1": false,
		"64:ff9b::5db8:d822": true, "224.0.0.1": false, "255.255.255.255": false, "198.18.0.1": false,
	} {
		if got := Public(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Public(%s) = %v, want %v", addr, got, want)
		}
	}
}

// FuzzDecodeRequest: no input panics the decoder, and whatever it accepts
// is a JSON-RPC 2.0 request with a method.
func FuzzDecodeRequest(f *testing.F) {
	for _, c := range requestCases {
		f.Add([]byte(c.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeRequest(body)
		if err == nil && (req == nil || req.JSONRPC != "2.0" || req.Method == "") {
			t.Fatalf("decodeRequest(%q) accepted %+v", body, req)
		}
		if err == nil {
			var p SendMessageRequest
			if e := decodeParams(req.Params, &p); e == nil && p.Message != nil {
				_, _ = input(p.Message.Parts)
			}
		}
	})
}

// FuzzParseChain: no metadata panics the parser; an accepted chain holds
// only agent names, within the bound, and survives a round trip.
func FuzzParseChain(f *testing.F) {
	for _, c := range chainCases {
		f.Add([]byte(c.metadata))
	}
	f.Fuzz(func(t *testing.T, md []byte) {
		chain, err := ParseChain(md)
		if err != nil {
			return
		}
		if len(chain) > maxChain {
			t.Fatalf("ParseChain accepted %d agents", len(chain))
		}
		back, err := ParseChain(WithChain(nil, chain))
		if err != nil || strings.Join(back, ",") != strings.Join(chain, ",") {
			t.Fatalf("round trip of %v = %v, %v", chain, back, err)
		}
		_ = CheckChain(chain, "a")
	})
}
