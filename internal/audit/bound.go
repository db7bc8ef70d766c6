package audit

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Bounds on what a record keeps of each field. Callers write most fields
// from what an agent (or an unauthenticated stranger) sent: a header, a tool
// or model name, a reason quoting it. Append cuts every one of them before
// the record is encoded, so no record can exceed the stream's max payload
// and one oversized call cannot make the audit refuse everyone's records.
const (
	// MaxName bounds names and identifiers: target, agent, source, request
	// and idempotency keys, codes, credential and task ids.
	MaxName = 256
	// MaxReason bounds a reason, and each of a policy's reasons and a model
	// call's attempts.
	MaxReason = 1024
	// maxList bounds how many policy reasons and model attempts are kept,
	// each at most maxItem bytes.
	maxList = 16
	maxItem = 512
	// MaxArguments is the largest arguments object kept whole. Larger ones
	// are kept as their digest and a prefix of MaxArgumentsPrefix bytes,
	// masked by the caller (the pipeline's built-in detectors).
	MaxArguments = 32 << 10
	// MaxArgumentsPrefix bounds ArgumentsPrefix.
	MaxArgumentsPrefix = 4 << 10
	// maxDetail bounds an event's Detail; a larger one is kept as its digest.
	maxDetail = 32 << 10
	// MaxRecord is the largest record Append stores, under NATS's default
	// max payload (1 MiB). The fields' bounds keep a record under it unless
	// nearly every byte needs escaping in JSON; then the large values
	// (arguments, detail, lists) give way to their digests.
	MaxRecord = 512 << 10
)

// Cut returns s bounded to max bytes, cut at a character boundary, and
// whether it was cut. Callers that build records from what a caller sent use
// it, so that the record says which fields were cut.
func Cut(s string, max int) (string, bool) {
	if len(s) <= max {
		return s, false
	}
	s = s[:max]
	// Drop a character split by the cut (at most utf8.UTFMax-1 bytes).
	for i := 0; i < utf8.UTFMax && len(s) > 0; i++ {
		r, size := utf8.DecodeLastRuneInString(s)
		if r != utf8.RuneError || size != 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s, true
}

// bound cuts every field of r to its bound, and names the fields it cut in
// r.Truncated.
func (r *Record) bound() {
	names := []struct {
		name string
		v    *string
	}{
		{"id", &r.ID}, {"kind", &r.Kind}, {"agent", &r.Agent}, {"claimed_agent", &r.ClaimedAgent}, {"principal", &r.Principal},
		{"principal_issuer", &r.PrincipalIssuer}, {"credential", &r.Credential}, {"task", &r.Task},
		{"target", &r.Target}, {"source", &r.Source}, {"edge", &r.Edge}, {"decision", &r.Decision},
		{"code", &r.Code}, {"args_digest", &r.ArgsDigest}, {"status", &r.Status},
		{"idempotency_key", &r.IdempotencyKey}, {"request_id", &r.RequestID}, {"remote", &r.Remote}, {"event", &r.Event},
		{"phase", &r.Phase}, {"intent", &r.Intent},
	}
	for _, f := range names {
		r.cut(f.name, f.v, MaxName)
	}
	r.cut("reason", &r.Reason, MaxReason)
	r.cut("arguments_prefix", &r.ArgumentsPrefix, MaxArgumentsPrefix)
	if len(r.Arguments) > MaxArguments {
		// Append cannot mask what it would keep; the pipeline keeps a masked
		// prefix before it gets here.
		r.Arguments = nil
		r.noteCut("arguments")
	}
	if len(r.Detail) > maxDetail {
		r.Detail = tooLarge(r.Detail)
		r.noteCut("detail")
	}
	if r.Policy != nil {
		r.cut("policy.revision", &r.Policy.Revision, MaxName)
		r.cut("policy.effect", &r.Policy.Effect, MaxName)
		r.Policy.Reasons = r.cutList("policy.reasons", r.Policy.Reasons)
	}
	if m := r.Model; m != nil {
		r.cut("model.target", &m.Target, MaxName)
		r.cut("model.finish_reason", &m.FinishReason, MaxName)
		m.Attempts = r.cutList("model.attempts", m.Attempts)
		if len(m.Redacted) > maxList {
			m.Redacted = nil
			r.noteCut("model.redacted")
		}
	}
}

// cut bounds *v to max bytes, noting the field if it was cut.
func (r *Record) cut(name string, v *string, max int) {
	var cut bool
	if *v, cut = Cut(*v, max); cut {
		r.noteCut(name)
	}
}

// cutList bounds a list of reasons: at most maxList, each maxItem bytes.
func (r *Record) cutList(name string, list []string) []string {
	if len(list) > maxList {
		list = list[:maxList:maxList]
		r.noteCut(name)
	}
	for i := range list {
		var cut bool
		if list[i], cut = Cut(list[i], maxItem); cut {
			r.noteCut(name)
		}
	}
	return list
}

func (r *Record) noteCut(name string) {
	for _, n := range r.Truncated {
		if n == name {
			return
		}
	}
	r.Truncated = append(r.Truncated, name)
}

// tooLarge is what a record keeps of a JSON value too large to keep: its
// digest and size.
func tooLarge(v []byte) json.RawMessage {
	return json.RawMessage(`{"digest":"` + digest(v) + `","bytes":` + strconv.Itoa(len(v)) + `}`)
}

// encode bounds r and encodes it without Seq and Prev, at most limit bytes:
// when the bounded fields still encode larger (JSON escapes a control
// character in six bytes), the large values give way to their digests.
func (r *Record) encode(limit int) ([]byte, error) {
	r.bound()
	body, err := r.marshal()
	if err != nil || len(body) <= limit {
		return body, err
	}
	if len(r.Arguments) > 0 {
		r.Arguments = nil
		r.noteCut("arguments")
	}
	if len(r.Detail) > 0 {
		r.Detail = tooLarge(r.Detail)
		r.noteCut("detail")
	}
	if r.ArgumentsPrefix != "" {
		r.ArgumentsPrefix = ""
		r.noteCut("arguments_prefix")
	}
	if r.Policy != nil && len(r.Policy.Reasons) > 0 {
		r.Policy.Reasons = nil
		r.noteCut("policy.reasons")
	}
	if r.Model != nil && len(r.Model.Attempts) > 0 {
		r.Model.Attempts = nil
		r.noteCut("model.attempts")
	}
	if body, err = r.marshal(); err == nil && len(body) > limit {
		err = fmt.Errorf("audit: encode %s: %d bytes, more than the %d a record may have", r.ID, len(body), limit)
	}
	return body, err
}

// marshal encodes r without Seq and Prev, which Append splices in.
func (r *Record) marshal() ([]byte, error) {
	unchained := *r
	unchained.Seq, unchained.Prev = 0, ""
	body, err := json.Marshal(&unchained)
	if err != nil {
		return nil, fmt.Errorf("audit: encode %s: %w", r.ID, err)
	}
	return body, nil
}
