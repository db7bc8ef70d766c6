package pipeline

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"testing"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/tools"
)

// manyTools builds a pipeline whose catalogue holds n tools erp.t<i>, one of
// them (erp.t0) hidden from contractors by policy.
func manyTools(t testing.TB, n int) *Pipeline {
	t.Helper()
	v, err := tools.NewValidator(json.RawMessage(`{"type": "object"}`))
	if err != nil {
		t.Fatal(err)
	}
	cat := fakeCatalog{}
	for i := range n {
		name := fmt.Sprintf("erp.t%d", i)
		cat[name] = &tools.Entry{Tool: tools.Tool{Name: name, Source: "erp"}, Source: &fakeSource{}, Spec: &config.ToolSourceSpec{}, Validator: v}
	}
	return New(slog.New(slog.DiscardHandler), Deps{
		Keys:      fakeKeys{},
		Resources: fakeResources{"Agent/impact": {Spec: json.RawMessage(`{"tools": ["erp.*"]}`)}},
		Policy: compilePolicy(t, `package corral.authz
deny contains "not for contractors" if {
	input.action.target == "erp.t0"
	"contractors" in input.principal.groups
}`),
		Kill:    fakeKill{},
		Catalog: cat,
		Audit:   &fakeAudit{},
	})
}

// TestScopesCachedPerPrincipal: the token exchange's per-tool visibility is
// computed once per agent, principal and policy revision, and the answers
// for one user never serve another with other groups. At d7dc022 answers
// for principals were never kept, so every exchange recomputed them all.
func TestScopesCachedPerPrincipal(t *testing.T) {
	const n = 200
	p := manyTools(t, n)
	staff := &Principal{Subject: "alice", Issuer: "https://idp.test", Groups: []string{"staff"}}
	contractor := &Principal{Subject: "alice", Issuer: "https://idp.test", Groups: []string{"contractors"}}

	first, err := p.Scopes(t.Context(), "impact", "", staff)
	if err != nil {
		t.Fatal(err)
	}
	cached := len(p.visible.Load().m)
	if cached != n {
		t.Fatalf("after one exchange the cache holds %d answers, want %d", cached, n)
	}
	again, err := p.Scopes(t.Context(), "impact", "", staff)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(first)
	slices.Sort(again)
	if got := len(p.visible.Load().m); got != cached || !slices.Equal(first, again) {
		t.Errorf("a second exchange: cache %d answers (want %d, all reused), scopes equal %v", got, cached, slices.Equal(first, again))
	}
	other, err := p.Scopes(t.Context(), "impact", "", contractor)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != n || len(other) != n-1 || slices.Contains(other, "tool:erp.t0") {
		t.Errorf("staff see %d tools, contractors %d (erp.t0 among them: %v); want %d and %d without erp.t0",
			len(first), len(other), slices.Contains(other, "tool:erp.t0"), n, n-1)
	}
}

// BenchmarkScopesPrincipal is one token exchange's scope computation with
// 1,500 tools, for the same user again and again.
func BenchmarkScopesPrincipal(b *testing.B) {
	p := manyTools(b, 1500)
	pr := &Principal{Subject: "alice", Issuer: "https://idp.test", Groups: []string{"staff"}}
	for b.Loop() {
		if _, err := p.Scopes(b.Context(), "impact", "", pr); err != nil {
			b.Fatal(err)
		}
	}
}
