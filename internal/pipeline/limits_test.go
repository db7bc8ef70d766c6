package pipeline

import (
	"errors"
	"math"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/problem"
)

func intp(n int) *int { return &n }

func concrete(name string, maxOut int, price float64) *llm.Model {
	return &llm.Model{Name: name, Spec: &config.ModelSpec{Provider: "openai", MaxOutputTokens: maxOut,
		Pricing: &config.Pricing{InputPerMTok: price, OutputPerMTok: price}}}
}

// TestOutputLimitField: the cap goes in the field(s) the target reads. A
// server other than OpenAI's gets max_tokens however the agent asked (or
// did not ask), since Ollama and others ignore max_completion_tokens and
// the call would leave uncapped; outputLimitField overrides it.
func TestOutputLimitField(t *testing.T) {
	at := func(baseURL, field string) *llm.Model {
		return &llm.Model{Name: "m", Spec: &config.ModelSpec{Provider: "openai", BaseURL: baseURL, OutputLimitField: field}}
	}
	tests := []struct {
		name                string
		target              *llm.Model
		max, maxCmp         *int
		wantMax, wantMaxCmp bool
	}{
		{"ollama, none", at("http://127.0.0.1:11434/v1", ""), nil, nil, true, false},
		{"ollama, max_completion_tokens only", at("http://127.0.0.1:11434/v1", ""), nil, intp(1), true, false},
		{"ollama, both", at("http://127.0.0.1:11434/v1", ""), intp(1), intp(2), true, false},
		{"openai, none", at("https://api.openai.com/v1", ""), nil, nil, false, true},
		{"openai, max_tokens only", at("https://api.openai.com/v1", ""), intp(5), nil, true, false},
		{"azure, none", at("https://x.openai.azure.com/openai/deployments/d?api-version=1", ""), nil, nil, false, true},
		{"both asked", at("http://vllm:8000/v1", "both"), intp(5), nil, true, true},
		{"max_completion_tokens asked", at("http://vllm:8000/v1", "max_completion_tokens"), intp(5), nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &llm.ChatRequest{MaxTokens: tt.max, MaxCompletionTokens: tt.maxCmp}
			setOutputCap(req, 7, tt.target)
			if got := req.MaxTokens != nil && *req.MaxTokens == 7; got != tt.wantMax || req.MaxTokens != nil && !got {
				t.Errorf("max_tokens = %v, want sent: %v (as 7)", req.MaxTokens, tt.wantMax)
			}
			if got := req.MaxCompletionTokens != nil && *req.MaxCompletionTokens == 7; got != tt.wantMaxCmp || req.MaxCompletionTokens != nil && !got {
				t.Errorf("max_completion_tokens = %v, want sent: %v (as 7)", req.MaxCompletionTokens, tt.wantMaxCmp)
			}
		})
	}
}

// TestOutputCaps: the limit a target gets, the one field it is sent in,
// and the refusal of limits above every reachable model's maximum.
func TestOutputCaps(t *testing.T) {
	small, big := concrete("small", 1000, 1), concrete("big", 8000, 1)
	tests := []struct {
		name           string
		max, maxCmp    *int
		wantSmall      int
		wantBig        int
		wantField      string // the one field sent
		wantRefusedFor string // the field named by a refusal
	}{
		{name: "none", wantSmall: 1000, wantBig: 8000, wantField: "max_completion_tokens"},
		{name: "max_tokens", max: intp(500), wantSmall: 500, wantBig: 500, wantField: "max_tokens"},
		{name: "max_tokens clamped per target", max: intp(5000), wantSmall: 1000, wantBig: 5000, wantField: "max_tokens"},
		{name: "both: the larger", max: intp(100), maxCmp: intp(1), wantSmall: 100, wantBig: 100, wantField: "max_completion_tokens"},
		{name: "int64 maximum", max: intp(math.MaxInt), wantRefusedFor: "max_tokens"},
		{name: "completion over every maximum", max: intp(1), maxCmp: intp(8001), wantRefusedFor: "max_completion_tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &llm.ChatRequest{MaxTokens: tt.max, MaxCompletionTokens: tt.maxCmp}
			err := checkOutputLimit(req, &llm.Model{Name: "route"}, []*llm.Model{small, big})
			if tt.wantRefusedFor != "" {
				var pe *problem.Error
				if !errors.As(err, &pe) || pe.Status != http.StatusUnprocessableEntity || pe.Code != problem.OutputLimitTooHigh {
					t.Fatalf("checkOutputLimit = %v, want 422 output_limit_too_high", err)
				}
				if want := []map[string]string{{"field": tt.wantRefusedFor, "message": "at most 8000"}}; !cmp.Equal(pe.Errors, want) {
					t.Errorf("checkOutputLimit errors = %v, want %v", pe.Errors, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("checkOutputLimit = %v, want nil", err)
			}
			capOf := outputCap(req)
			if got := capOf(small); got != tt.wantSmall {
				t.Errorf("outputCap(small) = %d, want %d", got, tt.wantSmall)
			}
			if got := capOf(big); got != tt.wantBig {
				t.Errorf("outputCap(big) = %d, want %d", got, tt.wantBig)
			}
			sent := *req
			setOutputCap(&sent, capOf(small), small)
			fields := map[string]*int{"max_tokens": sent.MaxTokens, "max_completion_tokens": sent.MaxCompletionTokens}
			for f, v := range fields {
				switch {
				case f == tt.wantField && (v == nil || *v != tt.wantSmall):
					t.Errorf("sent %s = %v, want %d", f, v, tt.wantSmall)
				case f != tt.wantField && v != nil:
					t.Errorf("sent %s = %d as well, want one cap in %s", f, *v, tt.wantField)
				}
			}
			if req.MaxTokens != tt.max || req.MaxCompletionTokens != tt.maxCmp {
				t.Error("setOutputCap changed the agent's request")
			}
		})
	}
}

// TestWorstCase: the reservation is the prompt plus the largest cap, priced
// at the dearest target, and saturates instead of wrapping.
func TestWorstCase(t *testing.T) {
	cheap, dear := concrete("cheap", 8000, 1), concrete("dear", 1000, 100)
	mc := &modelCall{prompt: 100, outCap: outputCap(&llm.ChatRequest{})}
	got := mc.worst([]*llm.Model{cheap, dear})
	want := budget.Usage{Tokens: 8100, Cost: 1100 * 100 / 1e6, Calls: 1}
	if !cmp.Equal(got, want) {
		t.Errorf("worst = %+v, want %+v", got, want)
	}
	mc = &modelCall{prompt: math.MaxInt, outCap: func(*llm.Model) int { return math.MaxInt }}
	if got := mc.worstOn(cheap); got.Tokens != math.MaxInt64 {
		t.Errorf("worstOn with huge numbers = %d tokens, want saturated at %d", got.Tokens, int64(math.MaxInt64))
	}
}
