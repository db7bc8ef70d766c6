package oauth

import (
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/tools"
)

// Scope items are "tool:<name or glob>" and "model:<name or glob>".
const (
	toolPrefix  = "tool:"
	modelPrefix = "model:"
)

// maxScopeItems bounds a requested scope; an agent that needs more asks
// for its whole scope by leaving scope out.
const maxScopeItems = 256

// agentScope is everything an agent's spec allows, as scope items.
func agentScope(spec *config.AgentSpec) []string {
	out := make([]string, 0, len(spec.Tools)+len(spec.Models))
	for _, t := range spec.Tools {
		out = append(out, toolPrefix+t)
	}
	for _, m := range spec.Models {
		out = append(out, modelPrefix+m)
	}
	return dedupe(out)
}

// splitItem returns an item's kind prefix and its name or glob.
func splitItem(item string) (prefix, name string, ok bool) {
	for _, p := range []string{toolPrefix, modelPrefix} {
		if name, found := strings.CutPrefix(item, p); found && name != "" {
			return p, name, true
		}
	}
	return "", "", false
}

// validItem reports whether item is a kind prefix and a name made of the
// characters RFC 6749 3.3 allows in a scope token.
func validItem(item string) bool {
	if _, _, ok := splitItem(item); !ok {
		return false
	}
	for i := 0; i < len(item); i++ {
		if c := item[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// parseScope splits a requested scope into distinct items, each checked.
func parseScope(scope string) ([]string, *failure) {
	items := strings.Fields(scope)
	if len(items) > maxScopeItems {
		return nil, invalidScope("scope has more than %d items", maxScopeItems)
	}
	for _, item := range items {
		if !validItem(item) {
			return nil, invalidScope("scope item %q is not tool:<name> or model:<name>", clip(item, 80))
		}
	}
	return dedupe(items), nil
}

// narrow checks that granted allows each requested item: the item is one of
// granted's, or names (without glob characters) something a granted
// pattern of its kind matches. It returns the first item that is not.
func narrow(requested, granted []string) (string, bool) {
	for _, item := range requested {
		if !slices.ContainsFunc(granted, func(g string) bool { return allows(g, item) }) {
			return item, false
		}
	}
	return "", true
}

// allows reports whether granted item g allows requested item r.
func allows(g, r string) bool {
	if g == r {
		return true
	}
	gp, gname, ok1 := splitItem(g)
	rp, rname, ok2 := splitItem(r)
	return ok1 && ok2 && gp == rp && !strings.ContainsAny(rname, "*?") && tools.Match(gname, rname)
}

// covers reports whether item a allows everything item b allows. For a glob
// b it matches b's text against a, which is sound except where a '?' in a
// stands for a '*' in b; that case is answered no, erring on the narrow side.
func covers(a, b string) bool {
	if a == b {
		return true
	}
	ap, aname, ok1 := splitItem(a)
	bp, bname, ok2 := splitItem(b)
	if !ok1 || !ok2 || ap != bp {
		return false
	}
	if strings.Contains(bname, "*") && strings.Contains(aname, "?") {
		return false
	}
	return tools.Match(aname, bname)
}

// intersect returns what both prev and next allow, as far as it can be said
// with the items of either: an item of next that an item of prev covers, or
// an item of prev that an item of next covers. Two globs that overlap
// without one containing the other give nothing: a delegation never widens.
func intersect(prev, next []string) []string {
	var out []string
	for _, b := range next {
		if slices.ContainsFunc(prev, func(a string) bool { return covers(a, b) }) {
			out = append(out, b)
			continue
		}
		for _, a := range prev {
			if covers(b, a) {
				out = append(out, a)
			}
		}
	}
	return dedupe(out)
}

// dedupe drops repeated items, keeping the first of each.
func dedupe(items []string) []string {
	out := items[:0:0]
	for _, it := range items {
		if !slices.Contains(out, it) {
			out = append(out, it)
		}
	}
	return out
}

// wellFormed keeps the items that are well formed: policy's answer is
// trusted, but an item the scope claim cannot carry is dropped.
func wellFormed(items []string) []string {
	out := items[:0:0]
	for _, it := range items {
		if validItem(it) {
			out = append(out, it)
		}
	}
	return dedupe(out)
}

// clip shortens s to at most n bytes for a message, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
