package pipeline

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/problem"
)

// FuzzParseArguments: arguments are either refused with 422
// invalid_arguments or come back as a value that encodes again.
func FuzzParseArguments(f *testing.F) {
	for _, seed := range []string{`{"id": 1}`, `{"id": 1e400}`, `{"x": ` + strings.Repeat("[", 101) + strings.Repeat("]", 101) + `}`, `{"n": -1e308}`, `[]`, ``, `{`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := parseArguments(json.RawMessage(raw))
		if err != nil {
			var pe *problem.Error
			if !errors.As(err, &pe) || pe.Code != problem.InvalidArguments {
				t.Fatalf("parseArguments(%q) = %v, want invalid_arguments", raw, err)
			}
			return
		}
		if _, err := json.Marshal(v); err != nil {
			t.Fatalf("parseArguments(%q) gave a value that does not encode: %v", raw, err)
		}
	})
}
