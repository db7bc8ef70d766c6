package approval

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var rulesCases = []struct {
	name    string
	in      string
	want    Rules
	wantErr string
}{
	{name: "defaults", in: `{}`, want: Rules{Quorum: 1, TTL: time.Hour}},
	{name: "other stages' keys", in: `{"redact": "mask"}`, want: Rules{Quorum: 1, TTL: time.Hour}},
	{name: "all", in: `{"approvers": ["payments-oncall"], "quorum": 2, "ttl": "4h"}`,
		want: Rules{Approvers: []string{"payments-oncall"}, Quorum: 2, TTL: 4 * time.Hour}},
	{name: "one group", in: `{"approvers": "ops"}`, want: Rules{Approvers: []string{"ops"}, Quorum: 1, TTL: time.Hour}},
	{name: "quorum zero", in: `{"quorum": 0}`, wantErr: "obligation quorum"},
	{name: "quorum fraction", in: `{"quorum": 1.5}`, wantErr: "obligation quorum"},
	{name: "quorum string", in: `{"quorum": "2"}`, wantErr: "obligation quorum"},
	{name: "quorum huge", in: `{"quorum": 1e30}`, wantErr: "obligation quorum"},
	{name: "ttl number", in: `{"ttl": 3600}`, wantErr: "obligation ttl"},
	{name: "ttl bad", in: `{"ttl": "soon"}`, wantErr: "obligation ttl"},
	{name: "ttl negative", in: `{"ttl": "-1h"}`, wantErr: "obligation ttl"},
	{name: "ttl too long", in: `{"ttl": "10000h"}`, wantErr: "obligation ttl"},
	{name: "approvers object", in: `{"approvers": {"a": 1}}`, wantErr: "obligation approvers"},
	{name: "approvers number", in: `{"approvers": [1]}`, wantErr: "obligation approvers[0]"},
	{name: "approvers bad name", in: `{"approvers": ["a b"]}`, wantErr: "obligation approvers"},
}

func TestParseRules(t *testing.T) {
	for _, tc := range rulesCases {
		t.Run(tc.name, func(t *testing.T) {
			var obl map[string]any
			d := json.NewDecoder(strings.NewReader(tc.in))
			d.UseNumber()
			if err := d.Decode(&obl); err != nil {
				t.Fatal(err)
			}
			got, err := ParseRules(obl)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseRules(%s) = %v, want error naming %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRules(%s) = %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseRules(%s) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func FuzzParseRules(f *testing.F) {
	for _, tc := range rulesCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var obl map[string]any
		d := json.NewDecoder(strings.NewReader(in))
		d.UseNumber()
		if d.Decode(&obl) != nil {
			return
		}
		r, err := ParseRules(obl)
		if err != nil {
			return
		}
		if r.Quorum < 1 || r.Quorum > MaxQuorum || r.TTL < MinTTL || r.TTL > MaxTTL {
			t.Fatalf("ParseRules(%s) = %+v: out of bounds", in, r)
		}
	})
}

func TestBindingDistinguishesFields(t *testing.T) {
	base := Action{Agent: "a", AgentUID: "u", Kind: "tool", Target: "t", ArgsDigest: "d"}
	seen := map[string]string{base.Binding(): "base"}
	for name, change := range map[string]func(*Action){
		"agent":     func(a *Action) { a.Agent = "b" },
		"uid":       func(a *Action) { a.AgentUID = "v" },
		"principal": func(a *Action) { a.Principal = "p" },
		"task":      func(a *Action) { a.Task = "x" },
		"target":    func(a *Action) { a.Target = "t2" },
		"digest":    func(a *Action) { a.ArgsDigest = "e" },
		"key":       func(a *Action) { a.IdempotencyKey = "k" },
		"shifted":   func(a *Action) { a.Agent, a.AgentUID = "au", "" },
	} {
		a := base
		change(&a)
		if prev, ok := seen[a.Binding()]; ok {
			t.Errorf("changing %s gives the binding of %s", name, prev)
		}
		seen[a.Binding()] = name
	}
	a := base
	a.Arguments, a.Step, a.Revision = json.RawMessage(`{"x":1}`), "3", "r"
	if a.Binding() != base.Binding() {
		t.Errorf("display-only fields change the binding")
	}
}

// TestOwnersCannotApprove: four eyes covers the agent's owners too, by a
// corral human's name or a user's subject; other approvers are eligible.
func TestOwnersCannotApprove(t *testing.T) {
	now := time.Now()
	a := Approval{State: Pending, Quorum: 1, Expires: now.Add(time.Hour), Action: Action{Agent: "payer", Owners: []string{"olga", "00u-bob"}}}
	for _, p := range []Person{Human("olga", nil), User("https://idp.example", "00u-bob", nil)} {
		if err := a.Eligible(p, now); !errors.Is(err, ErrOwnAction) {
			t.Errorf("owner %s deciding: %v, want ErrOwnAction", p.ID, err)
		}
	}
	if err := a.Eligible(Human("ana", nil), now); err != nil {
		t.Errorf("another approver: %v", err)
	}
}
