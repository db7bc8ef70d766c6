package trigger

import (
	"bytes"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/config"
)

var hex64 = strings.Repeat("ab", 32)

func TestParseStripe(t *testing.T) {
	tests := []struct {
		in      string
		wantTS  int64
		wantN   int
		wantErr bool
	}{
		{"t=1492774577,v1=" + hex64, 1492774577, 1, false},
		{"t=1492774577,v1=" + hex64 + ",v1=" + strings.Repeat("cd", 32) + ",v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39", 1492774577, 2, false},
		{" t=1492774577 , v1=" + hex64, 1492774577, 1, false},
		{"v1=" + hex64, 0, 0, true},
		{"t=1492774577", 0, 0, true},
		{"t=1492774577,v1=" + hex64[:62], 0, 0, true},
		{"t=-5,v1=" + hex64, 0, 0, true},
		{"t=1,t=2,v1=" + hex64, 0, 0, true},
		{"t=x,v1=" + hex64, 0, 0, true},
		{"garbage", 0, 0, true},
		{"", 0, 0, true},
		{"t=1492774577,v1=" + strings.Repeat("zz", 32), 0, 0, true},
		{"t=1492774577" + strings.Repeat(",v1="+hex64, 9), 0, 0, true},
	}
	for _, tt := range tests {
		ts, sigs, err := ParseStripe(tt.in)
		if (err != nil) != tt.wantErr || ts != tt.wantTS || len(sigs) != tt.wantN {
			t.Errorf("ParseStripe(%q) = %d, %d sigs, %v; want %d, %d, error %v", tt.in, ts, len(sigs), err, tt.wantTS, tt.wantN, tt.wantErr)
		}
	}
}

func TestParseGitHubAndHMAC(t *testing.T) {
	for _, tt := range []struct {
		in      string
		wantErr bool
	}{
		{"sha256=" + hex64, false},
		{"sha256=" + strings.ToUpper(hex64), false},
		{hex64, true},
		{"sha1=" + hex64[:40], true},
		{"sha256=" + hex64[:63], true},
		{"sha256=", true},
	} {
		if _, err := ParseGitHub(tt.in); (err != nil) != tt.wantErr {
			t.Errorf("ParseGitHub(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
		}
	}
	raw, _ := hex.DecodeString(hex64)
	for _, tt := range []struct {
		in    string
		wantN int
	}{
		{hex64, 1},
		{"sha256=" + hex64, 1},
		{"v1,q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=", 1},
		{"q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s", 1},
		{hex64 + " v1,q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=", 2},
		{"", 0},
		{"not-a-mac", 0},
		{hex64[:32], 0},
	} {
		sigs, err := ParseHMAC(tt.in)
		if len(sigs) != tt.wantN || (tt.wantN == 0) != (err != nil) {
			t.Errorf("ParseHMAC(%q) = %d sigs, %v; want %d", tt.in, len(sigs), err, tt.wantN)
		}
		for _, s := range sigs {
			if !bytes.Equal(s, raw) {
				t.Errorf("ParseHMAC(%q) = %x, want %x", tt.in, s, raw)
			}
		}
	}
}

func FuzzParseStripe(f *testing.F) {
	f.Add("t=1492774577,v1=" + hex64)
	f.Add("t=1492774577,v1=" + hex64 + ",v0=" + hex64)
	f.Add("t=,v1=")
	f.Add(",,,=,=")
	f.Fuzz(func(t *testing.T, in string) {
		ts, sigs, err := ParseStripe(in)
		if err != nil {
			return
		}
		if ts <= 0 || len(sigs) == 0 || len(sigs) > maxStripeSignatures {
			t.Fatalf("ParseStripe(%q) = %d, %d sigs without error", in, ts, len(sigs))
		}
		for _, s := range sigs {
			if len(s) != 32 {
				t.Fatalf("ParseStripe(%q): a MAC of %d bytes", in, len(s))
			}
		}
	})
}

func FuzzParseGitHub(f *testing.F) {
	f.Add("sha256=" + hex64)
	f.Add("sha256=")
	f.Add("sha1=00")
	f.Fuzz(func(t *testing.T, in string) {
		mac, err := ParseGitHub(in)
		if err == nil && len(mac) != 32 {
			t.Fatalf("ParseGitHub(%q): a MAC of %d bytes", in, len(mac))
		}
	})
}

func FuzzParseHMAC(f *testing.F) {
	f.Add(hex64)
	f.Add("v1,q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=")
	f.Add("sha256=" + hex64 + " " + hex64)
	f.Fuzz(func(t *testing.T, in string) {
		sigs, err := ParseHMAC(in)
		if err != nil {
			return
		}
		if len(sigs) == 0 || len(sigs) > maxStripeSignatures {
			t.Fatalf("ParseHMAC(%q) = %d sigs", in, len(sigs))
		}
		for _, s := range sigs {
			if len(s) != 32 {
				t.Fatalf("ParseHMAC(%q): a MAC of %d bytes", in, len(s))
			}
		}
	})
}

// FuzzVerify: no header value verifies a body unless it carries the MAC
// of that body under the secret.
func FuzzVerify(f *testing.F) {
	secret := []byte("fuzz secret")
	now := time.Unix(1767225600, 0)
	body := []byte(`{"port":"Rotterdam"}`)
	good := "t=" + strconv.FormatInt(now.Unix(), 10) + ",v1=" + hex.EncodeToString(sign(secret, []byte(strconv.FormatInt(now.Unix(), 10)), []byte("."), body))
	f.Add(good, body)
	f.Add("t=1,v1="+hex64, body)
	f.Add("sha256="+hex64, []byte("{}"))
	spec := &config.WebhookSource{Signature: config.SignatureStripe}
	f.Fuzz(func(t *testing.T, value string, b []byte) {
		h := http.Header{}
		h.Set("Stripe-Signature", value)
		_, err := verify(spec, h, b, secret, now)
		if err != nil {
			return
		}
		ts, _, perr := ParseStripe(value)
		if perr != nil {
			t.Fatalf("verify passed a header ParseStripe refuses: %q", value)
		}
		want := sign(secret, []byte(strconv.FormatInt(ts, 10)), []byte("."), b)
		if !strings.Contains(strings.ToLower(value), hex.EncodeToString(want)) {
			t.Fatalf("verify passed %q for body %q without its MAC", value, b)
		}
	})
}
