package tools

import "testing"

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"erp.get_order", "erp.get_order", true},
		{"erp.get_order", "erp.get_orders", false},
		{"erp.*", "erp.get_order", true},
		{"erp.*", "erp.", true},
		{"erp.*", "erpx.get", false},
		{"erp*", "erp.a.b", true},
		{"*", "anything.at.all", true},
		{"*.get_*", "crm.get_customer", true},
		{"*.get_*", "crm.list_customers", false},
		{"erp.get_?", "erp.get_a", true},
		{"erp.get_?", "erp.get_ab", false},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"", "", true},
		{"", "a", false},
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("erp.*", "erp.get_order")
	f.Add("*a*?b", "xxaab")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		got := Match(pattern, name)
		if pattern == name && !got {
			t.Errorf("Match(%q, %q) = false for equal strings", pattern, name)
		}
		if got && !containsNoWild(pattern) {
			return
		}
		if containsNoWild(pattern) && got != (pattern == name) {
			t.Errorf("Match(%q, %q) = %v without wildcards", pattern, name, got)
		}
	})
}

func containsNoWild(s string) bool {
	for i := range len(s) {
		if s[i] == '*' || s[i] == '?' {
			return false
		}
	}
	return true
}
