package console

import (
	"net/http"
	"strings"
)

// readable are the API paths every signed-in role reads (GET), by prefix:
// what the console's views show. Admins read any /v1 path.
var readable = []string{
	"/v1/tasks", "/v1/approvals", "/v1/killswitches", "/v1/budgets", "/v1/limits",
	"/v1/audit", "/v1/traces/", "/v1/tools", "/v1/dlq",
	"/v1/resources/agents", "/v1/resources/models", "/v1/resources/toolsources", "/v1/resources/budgets",
}

// exportPaths are reads kept for admins: whole-audit downloads.
var exportPaths = []string{"/v1/audit/export", "/v1/audit/checkpoints"}

// isDecision reports whether path is POST /v1/approvals/{id}/approve|deny.
func isDecision(method, path string) bool {
	if method != http.MethodPost || !strings.HasPrefix(path, "/v1/approvals/") {
		return false
	}
	rest := strings.TrimPrefix(path, "/v1/approvals/")
	id, verb, ok := strings.Cut(rest, "/")
	return ok && id != "" && !strings.Contains(verb, "/") && (verb == "approve" || verb == "deny")
}

func hasPrefix(path string, prefixes []string) bool {
	for _, p := range prefixes {
		if path == p || strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") || (strings.HasSuffix(p, "/") && strings.HasPrefix(path, p)) {
			return true
		}
	}
	return false
}

// allowed reports whether role may call method path (a clean /v1 path)
// through the console.
func allowed(role Role, method, path string) bool {
	read := method == http.MethodGet || method == http.MethodHead
	switch {
	case role == Admin:
		return true
	case read:
		return hasPrefix(path, readable) && !hasPrefix(path, exportPaths)
	case role == Approver:
		return isDecision(method, path)
	}
	return false
}
