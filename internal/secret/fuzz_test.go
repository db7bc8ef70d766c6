package secret_test

import (
	"strings"
	"testing"
)

// FuzzOpen checks that Open never panics, whatever it is given, and that
// only values Seal made for the same name open.
func FuzzOpen(f *testing.F) {
	s := sealer(f, 1)
	good := mustSeal(f, s, "erp-token", "t0ken")
	for _, seed := range []struct{ name, sealed string }{
		{"erp-token", good},
		{"crm-token", good},
		{"erp-token", ""},
		{"erp-token", "v1:"},
		{"erp-token", "v1:" + s.KeyID() + ":"},
		{"erp-token", "v1:" + s.KeyID() + ":AAAA"},
		{"erp-token", "v1:00000000:" + good[12:]},
		{"erp-token", "v1:ABCDEF12:" + good[12:]},
		{"erp-token", good + "=="},
		{"erp-token", mustSeal(f, sealer(f, 2), "erp-token", "t0ken")},
		{"", good},
		{"a\x00b", good},
	} {
		f.Add(seed.name, seed.sealed)
	}
	f.Fuzz(func(t *testing.T, name, sealed string) {
		got, err := s.Open(name, sealed)
		switch {
		case err == nil && (name != "erp-token" || sealed != good) && !strings.HasPrefix(sealed, "v1:"+s.KeyID()+":"):
			t.Errorf("Open(%q, %q) = %q, nil for something Seal cannot have made", name, sealed, got)
		case err == nil && name == "erp-token" && sealed == good && got != "t0ken":
			t.Errorf("Open(seed) = %q, want t0ken", got)
		}
		// Whatever sealed is, as a plaintext it round-trips under any name Seal accepts.
		again, err := s.Seal(name, sealed)
		if err != nil {
			return
		}
		if back, err := s.Open(name, again); err != nil || back != sealed {
			t.Errorf("Open(Seal(%q, %q)) = %q, %v", name, sealed, back, err)
		}
	})
}
