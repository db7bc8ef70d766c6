package approval

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestListPages: pages kept by selection are the pages of the whole list
// sorted newest first, for every filter, limit and cursor, with ties in
// the creation time broken by id, and a cursor whose approval has since
// left the filter still pages on from where it stood.
func TestListPages(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := &Store{entries: map[string]entry{}}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	states := []State{Pending, Approved, Denied, Executed}
	var all []*Approval
	for i := range 500 {
		a := &Approval{ID: fmt.Sprintf("id%04d", rng.IntN(10000)), State: states[rng.IntN(len(states))],
			Action:  Action{Agent: fmt.Sprintf("agent%d", rng.IntN(3))},
			Created: base.Add(time.Duration(rng.IntN(200)) * time.Second)} // many ties
		if _, dup := s.entries[a.ID]; dup {
			continue
		}
		s.entries[a.ID] = entry{rev: uint64(i + 1), a: a}
		all = append(all, a)
	}
	slices.SortFunc(all, newestFirst)
	want := func(f Filter) []string {
		var ids []string
		past := f.After == ""
		for _, a := range all {
			if !past {
				past = a.ID == f.After
				continue
			}
			if (f.State == "" || a.State == f.State) && (f.Agent == "" || a.Action.Agent == f.Agent) {
				ids = append(ids, a.ID)
			}
		}
		return ids
	}
	for _, f := range []Filter{{}, {State: Pending}, {Agent: "agent1"}, {State: Denied, Agent: "agent2"}} {
		for _, limit := range []int{0, 1, 7, 50, 1000} {
			f.Limit = limit
			f.After = ""
			var got []string
			for pages := 0; ; pages++ {
				page, more := s.List(f)
				for _, a := range page {
					got = append(got, a.ID)
				}
				if !more {
					break
				}
				if limit == 0 || len(page) != limit || pages > 600 {
					t.Fatalf("%+v: a page of %d says more follow", f, len(page))
				}
				f.After = page[len(page)-1].ID
			}
			f.After = ""
			if w := want(f); !slices.Equal(got, w) {
				t.Errorf("%+v: pages give %d ids %v..., want %d %v...", f, len(got), head(got), len(w), head(w))
			}
		}
	}
	// A cursor that is not pending any more still pages the pending on.
	for _, a := range all[100:] {
		if a.State != Pending {
			page, _ := s.List(Filter{State: Pending, After: a.ID, Limit: 1000})
			if w := want(Filter{State: Pending, After: a.ID}); !slices.EqualFunc(page, w, func(p Approval, id string) bool { return p.ID == id }) {
				t.Errorf("after %s (%s): %d approvals, want %d", a.ID, a.State, len(page), len(w))
			}
			break
		}
	}
	if page, more := s.List(Filter{After: "gone", Limit: 5}); page != nil || more {
		t.Errorf("after an unknown id = %d, %v; want nothing", len(page), more)
	}
}

func head(ids []string) []string { return ids[:min(len(ids), 5)] }

// BenchmarkList100k is the first page of 100,000 pending approvals.
func BenchmarkList100k(b *testing.B) {
	s := &Store{entries: map[string]entry{}}
	base := time.Now()
	for i := range 100000 {
		id := fmt.Sprintf("ap%06d", i)
		s.entries[id] = entry{rev: uint64(i + 1), a: &Approval{ID: id, State: Pending, Action: Action{Agent: "a"}, Created: base.Add(time.Duration(i))}}
	}
	for b.Loop() {
		if page, _ := s.List(Filter{State: Pending, Limit: 50}); len(page) != 50 {
			b.Fatal(len(page))
		}
	}
}
