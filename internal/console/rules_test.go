package console

import (
	"net/http"
	"strings"
	"testing"
)

var ruleCases = []struct {
	role         Role
	method, path string
	want         bool
}{
	{Viewer, "GET", "/v1/tasks", true},
	{Viewer, "GET", "/v1/tasks/task_1/events", true},
	{Viewer, "HEAD", "/v1/approvals", true},
	{Viewer, "GET", "/v1/traces/0123456789abcdef0123456789abcdef", true},
	{Viewer, "GET", "/v1/resources/agents", true},
	{Viewer, "GET", "/v1/resources/secrets", false},
	{Viewer, "GET", "/v1/resources/agentsx", false},
	{Viewer, "GET", "/v1/tasksx", false},
	{Viewer, "GET", "/v1/keys", false},
	{Viewer, "GET", "/v1/humans", false},
	{Viewer, "GET", "/v1/admin-tokens", false},
	{Viewer, "GET", "/v1/audit/export", false},
	{Viewer, "POST", "/v1/approvals/a/approve", false},
	{Viewer, "POST", "/v1/killswitches", false},
	{Approver, "POST", "/v1/approvals/a/approve", true},
	{Approver, "POST", "/v1/approvals/a/deny", true},
	{Approver, "POST", "/v1/approvals/a/approve/x", false},
	{Approver, "POST", "/v1/approvals//approve", false},
	{Approver, "PUT", "/v1/approvals/a/approve", false},
	{Approver, "POST", "/v1/tasks/t/cancel", false},
	{Approver, "DELETE", "/v1/killswitches/all", false},
	{Admin, "POST", "/v1/killswitches", true},
	{Admin, "DELETE", "/v1/resources/agents/x", true},
	{Role("root"), "GET", "/v1/tasks", true},
	{Role("root"), "POST", "/v1/killswitches", false},
}

func TestAllowed(t *testing.T) {
	for _, tt := range ruleCases {
		if got := allowed(tt.role, tt.method, tt.path); got != tt.want {
			t.Errorf("allowed(%s, %s, %s) = %v, want %v", tt.role, tt.method, tt.path, got, tt.want)
		}
	}
}

// FuzzAllowed: whatever the method and path, a viewer changes nothing, an
// approver changes nothing but a decision, and nobody but an admin reads
// keys, humans or admin tokens.
func FuzzAllowed(f *testing.F) {
	for _, tt := range ruleCases {
		f.Add(string(tt.role), tt.method, tt.path)
	}
	f.Fuzz(func(t *testing.T, role, method, path string) {
		r := Role(role)
		ok := allowed(r, method, path)
		read := method == http.MethodGet || method == http.MethodHead
		switch {
		case r == Admin:
			if !ok {
				t.Errorf("allowed(admin, %q, %q) = false", method, path)
			}
			return
		case ok && !read && (r != Approver || !isDecision(method, path)):
			t.Errorf("allowed(%q, %q, %q): a change by a role that may not make it", role, method, path)
		case ok && isDecision(method, path) && strings.Count(path, "/") != 4:
			t.Errorf("isDecision(%q, %q) on a path of the wrong shape", method, path)
		}
		for _, secret := range []string{"/v1/keys", "/v1/humans", "/v1/admin-tokens", "/v1/signing-keys"} {
			if ok && (path == secret || strings.HasPrefix(path, secret+"/")) {
				t.Errorf("allowed(%q, %q, %q) reaches %s", role, method, path, secret)
			}
		}
	})
}
