package budget

import (
	"regexp"
	"strings"
	"testing"
)

// keyToken is what one token of a key-value key may hold.
var keyToken = regexp.MustCompile(`^[-/_=a-zA-Z0-9]+$`)

var taskTokenTests = []struct{ task, token string }{
	{"t-42", "t-42"},
	{"01JD3Q2Z8Y_a", "01JD3Q2Z8Y_a"},
	{"", "="},
	{"tasks/42", "=dGFza3MvNDI"},
	{"a.b", "=YS5i"},
	{"=x", "=PXg"},
	{"été", "=w6l0w6k"},
	{strings.Repeat("a", 128), strings.Repeat("a", 128)},
	{strings.Repeat("a", 129), "==digest"},
}

func TestTaskToken(t *testing.T) {
	for _, tt := range taskTokenTests {
		got := taskToken(tt.task)
		if strings.HasPrefix(tt.token, "==") {
			if !strings.HasPrefix(got, "==") || len(got) != 34 {
				t.Errorf("taskToken(%d bytes) = %q, want == and a 32-digit digest", len(tt.task), got)
			}
			if _, err := parseTaskToken(got); err == nil {
				t.Errorf("parseTaskToken(%q) of a digest succeeded", got)
			}
			continue
		}
		if got != tt.token {
			t.Errorf("taskToken(%q) = %q, want %q", tt.task, got, tt.token)
		}
		back, err := parseTaskToken(got)
		if err != nil || back != tt.task {
			t.Errorf("parseTaskToken(%q) = %q, %v; want %q", got, back, err, tt.task)
		}
	}
	for _, bad := range []string{"a.b", "=not base64!", "=YQ=", "a b", strings.Repeat("a", 129), "=" + strings.Repeat("YWFh", 33)} {
		if task, err := parseTaskToken(bad); err == nil {
			t.Errorf("parseTaskToken(%q) = %q, want an error", bad, task)
		}
	}
}

// FuzzTaskToken checks that any task id becomes one valid key token that
// reads back as the same id (short ids) or as an error (digests), and that
// reading any token either fails or gives an id that makes that same token.
func FuzzTaskToken(f *testing.F) {
	for _, tt := range taskTokenTests {
		f.Add(tt.task)
		f.Add(tt.token)
	}
	f.Fuzz(func(t *testing.T, s string) {
		token := taskToken(s)
		if !keyToken.MatchString(token) {
			t.Fatalf("taskToken(%q) = %q, not a valid key token", s, token)
		}
		back, err := parseTaskToken(token)
		switch {
		case len(s) > maxPlainTask && err == nil:
			t.Fatalf("parseTaskToken(%q) of a long id's digest = %q, want an error", token, back)
		case len(s) <= maxPlainTask && (err != nil || back != s):
			t.Fatalf("parseTaskToken(taskToken(%q)) = %q, %v", s, back, err)
		}
		if task, err := parseTaskToken(s); err == nil && taskToken(task) != s {
			t.Fatalf("parseTaskToken(%q) = %q, whose token is %q", s, task, taskToken(task))
		}
	})
}
