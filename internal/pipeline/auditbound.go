package pipeline

import (
	"encoding/json"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/redact"
)

// maskMargin is how far past the kept prefix of large arguments the masker
// reads, so that a value the cut runs through (a card number, an email) is
// still found whole and masked.
const maskMargin = 256

// keepArguments puts a call's canonical arguments in its record, for a tool
// source that asks for it: whole up to audit.MaxArguments bytes; beyond,
// the record keeps their digest (already set) and a prefix masked by the
// built-in detectors, so that one large call cannot make a record the audit
// stream refuses.
func (p *Pipeline) keepArguments(rec *audit.Record, args json.RawMessage) {
	if len(args) <= audit.MaxArguments {
		rec.Arguments = args
		return
	}
	window, _ := audit.Cut(string(args), audit.MaxArgumentsPrefix+maskMargin)
	masked := p.masker.NewSession(redact.Mask).Redact(window)
	rec.ArgumentsPrefix, _ = audit.Cut(masked, audit.MaxArgumentsPrefix)
	rec.Truncated = append(rec.Truncated, "arguments")
}
