package audit

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

// TestIntentsAndOutcomes: a call's intent and its outcome are two records
// of one chain. Query shows the outcome, and an intent that no outcome
// names as outcome unknown (a crash mid-call); Verify passes and counts the
// unknown outcomes; an export of both record types verifies offline.
func TestIntentsAndOutcomes(t *testing.T) {
	l := open(t, bustest.Open(t))
	intent := call("impact", "erp.pay")
	intent.Phase, intent.Status = PhaseIntent, "pending"
	outcome := call("impact", "erp.pay")
	orphan := call("impact", "erp.refund")
	orphan.Phase, orphan.Status = PhaseIntent, "pending"
	appendAll(t, l, intent)
	intent.ID = "" // appendAll worked on a copy
	got, err := l.Query(t.Context(), Filter{})
	if err != nil || len(got) != 1 {
		t.Fatalf("Query with one intent = %+v, %v", got, err)
	}
	outcome.Intent = got[0].ID
	appendAll(t, l, outcome, orphan, call("impact", "erp.get"))

	for _, f := range []Filter{{}, {Agent: "impact"}, {Tool: "erp.*"}} {
		got, err := l.Query(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		var statuses []string
		for _, r := range got {
			statuses = append(statuses, r.Target+":"+r.Status)
		}
		want := []string{"erp.pay:ok", "erp.refund:" + StatusUnknown, "erp.get:ok"}
		if !slices.Equal(statuses, want) {
			t.Errorf("Query(%+v) = %v, want %v", f, statuses, want)
		}
	}
	rep := verify(t, l)
	if !rep.OK || rep.Records != 4 || rep.OutcomeUnknown != 1 || len(rep.UnknownOutcomes) != 1 {
		t.Errorf("Verify = %+v, want OK over 4 records, 1 outcome unknown", rep)
	}
	var archive bytes.Buffer
	if err := l.Export(t.Context(), Range{}, func(_ uint64, data []byte) error {
		archive.Write(data)
		archive.WriteByte('\n')
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	arep, err := VerifyArchive(&archive, nil, nil)
	if err != nil || !arep.OK || arep.Records != 4 || arep.OutcomeUnknown != 1 {
		t.Errorf("VerifyArchive = %+v, %v; want OK over 4 records, 1 outcome unknown", arep, err)
	}
}

// TestQueryLimitCountsListedRecords: with every call leaving an intent and an
// outcome, a query for the newest n still lists n outcomes.
func TestQueryLimitCountsListedRecords(t *testing.T) {
	l := open(t, bustest.Open(t))
	for i := range 10 {
		intent := call("impact", fmt.Sprintf("erp.op%d", i))
		intent.Phase, intent.Status = PhaseIntent, "pending"
		id := appendAll(t, l, intent)[0]
		outcome := call("impact", fmt.Sprintf("erp.op%d", i))
		outcome.Intent = id
		appendAll(t, l, outcome)
	}
	got, err := l.Query(t.Context(), Filter{Limit: 4})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"impact/erp.op6", "impact/erp.op7", "impact/erp.op8", "impact/erp.op9"}; !slices.Equal(targets(got), want) {
		t.Errorf("Query(limit 4) = %v, want %v", targets(got), want)
	}
}
