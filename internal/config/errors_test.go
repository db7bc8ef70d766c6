package config

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTruncate(t *testing.T) {
	problems := func(n int) Errors {
		var es Errors
		for i := range n {
			es = append(es, FieldError{Source: "a.yaml", Document: i + 1, Field: "spec", Message: "required"})
		}
		return es
	}
	tests := []struct {
		name  string
		es    Errors
		limit int
		want  Errors
	}{
		{"empty", nil, 3, nil},
		{"under", problems(2), 3, problems(2)},
		{"at", problems(3), 3, problems(3)},
		{"one over", problems(4), 3, append(problems(3), FieldError{Message: "and 1 more problem"})},
		{"over", problems(10), 3, append(problems(3), FieldError{Message: "and 7 more problems"})},
		{"zero", problems(2), 0, Errors{{Message: "and 2 more problems"}}},
		{"negative", problems(2), -1, Errors{{Message: "and 2 more problems"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := fmt.Sprint(tt.es)
			got := tt.es.Truncate(tt.limit)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Truncate(%d) mismatch (-want +got):\n%s", tt.limit, diff)
			}
			if after := fmt.Sprint(tt.es); after != before {
				t.Errorf("Truncate(%d) changed its receiver from %s to %s", tt.limit, before, after)
			}
		})
	}
}
