package pipeline

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/tools"
)

// TestAuditMasksArgumentKeys: an invalid call whose argument keys hold
// personal data (a map keyed by e-mail and card) leaves neither in the
// audit's reason, while the caller's answer still points at its own keys.
// At d7dc022 (finding 21) the reason listed the keys in clear.
func TestAuditMasksArgumentKeys(t *testing.T) {
	p, aud := newTestPipeline(t, &fakeSource{})
	v, err := tools.NewValidator(json.RawMessage(`{"type": "object", "properties": {"recipients": {"type": "object", "additionalProperties": {"type": "integer"}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	p.Catalog.(fakeCatalog)["erp.pay"] = &tools.Entry{Tool: tools.Tool{Name: "erp.pay", Source: "erp"}, Source: &fakeSource{}, Spec: &config.ToolSourceSpec{}, Validator: v}
	_, err = p.Invoke(t.Context(), Action{Credential: "corral_ak_impact", Target: "erp.pay",
		Arguments: json.RawMessage(`{"recipients": {"jane.doe@example.com 4111111111111111": "x"}}`)})
	pe, ok := err.(*problem.Error)
	if !ok || pe.Code != problem.InvalidArguments {
		t.Fatalf("Invoke: %v, want invalid_arguments", err)
	}
	r := aud.records[len(aud.records)-1]
	if strings.Contains(r.Reason, "jane.doe") || strings.Contains(r.Reason, "4111") || !strings.Contains(r.Reason, "/recipients/") {
		t.Errorf("audit reason %q: want the pointer with the e-mail and card masked", r.Reason)
	}
	if vs, _ := pe.Errors.([]tools.Violation); len(vs) != 1 || !strings.Contains(vs[0].Pointer, "jane.doe@example.com") {
		t.Errorf("the caller's answer points at %v, want its own key", pe.Errors)
	}
}
