package secret_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/secret"
)

// sealer returns a Sealer over a fixed key, filled with b: tests need two
// different keys, and fixed ones make failures reproducible.
func sealer(t testing.TB, b byte) *secret.Sealer {
	t.Helper()
	s, err := secret.NewSealer(bytes.Repeat([]byte{b}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustSeal(t testing.TB, s *secret.Sealer, name, plaintext string) string {
	t.Helper()
	sealed, err := s.Seal(name, plaintext)
	if err != nil {
		t.Fatalf("Seal(%q, ...): %v", name, err)
	}
	return sealed
}

func TestNewSealerKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := secret.NewSealer(make([]byte, n)); err == nil {
			t.Errorf("NewSealer(%d bytes) err = nil, want an error", n)
		}
	}
}

func TestKeyID(t *testing.T) {
	a, b := sealer(t, 1), sealer(t, 2)
	if id := a.KeyID(); len(id) != 8 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("KeyID() = %q, want 8 lowercase hex digits", id)
	}
	if a.KeyID() == b.KeyID() {
		t.Errorf("two keys have the same id %s", a.KeyID())
	}
	if again := sealer(t, 1); again.KeyID() != a.KeyID() {
		t.Errorf("KeyID() = %s for the same key, want %s", again.KeyID(), a.KeyID())
	}
}

func TestSealOpen(t *testing.T) {
	s := sealer(t, 1)
	tests := []struct {
		name, secret, plaintext string
	}{
		{"token", "erp-token", "s3cr3t-b3arer-t0ken"},
		{"empty", "erp-token", ""},
		{"unicode", "crm", "pässwört ✓"},
		{"nul inside", "crm", "a\x00b"},
		{"long", "big", strings.Repeat("x", 65536)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sealed := mustSeal(t, s, tt.secret, tt.plaintext)
			if want := "v1:" + s.KeyID() + ":"; !strings.HasPrefix(sealed, want) {
				t.Errorf("Seal(%q, ...) = %.20q..., want the prefix %q", tt.secret, sealed, want)
			}
			if tt.plaintext != "" && strings.Contains(sealed, tt.plaintext) {
				t.Errorf("Seal(%q, ...) contains the plaintext", tt.secret)
			}
			got, err := s.Open(tt.secret, sealed)
			if err != nil || got != tt.plaintext {
				t.Errorf("Open(Seal(%q, x)) = %.20q, %v, want x", tt.secret, got, err)
			}
		})
	}
}

func TestSealIsDeterministic(t *testing.T) {
	s := sealer(t, 1)
	a := mustSeal(t, s, "erp-token", "one")
	if again := mustSeal(t, s, "erp-token", "one"); again != a {
		t.Errorf("Seal twice = %s and %s, want the same", a, again)
	}
	others := map[string]string{
		"other value": mustSeal(t, s, "erp-token", "two"),
		"other name":  mustSeal(t, s, "crm-token", "one"),
		"other key":   mustSeal(t, sealer(t, 2), "erp-token", "one"),
	}
	for what, sealed := range others {
		if sealed == a {
			t.Errorf("Seal with %s = %s, the same as the original", what, sealed)
		}
	}
}

func TestSealRefusesNUL(t *testing.T) {
	// "a\x00b" + "c" would otherwise derive the same nonce as "a" + "b\x00c".
	if _, err := sealer(t, 1).Seal("a\x00b", "c"); err == nil {
		t.Error(`Seal("a\x00b", ...) err = nil, want an error`)
	}
}

// tamper flips one bit in the decoded data of a sealed value, at index i
// (negative: from the end).
func tamper(t *testing.T, sealed string, i int) string {
	t.Helper()
	cut := strings.LastIndexByte(sealed, ':')
	raw, err := base64.RawURLEncoding.DecodeString(sealed[cut+1:])
	if err != nil {
		t.Fatal(err)
	}
	if i < 0 {
		i += len(raw)
	}
	raw[i] ^= 0x01
	return sealed[:cut+1] + base64.RawURLEncoding.EncodeToString(raw)
}

func TestOpenErrors(t *testing.T) {
	const plaintext = "hunter2-very-secret"
	s := sealer(t, 1)
	good := mustSeal(t, s, "erp-token", plaintext)
	id := s.KeyID()
	tests := []struct {
		name   string
		secret string
		sealed string
		want   error
	}{
		{"empty", "erp-token", "", secret.ErrMalformed},
		{"plaintext", "erp-token", plaintext, secret.ErrMalformed},
		{"unknown version", "erp-token", "v2" + strings.TrimPrefix(good, "v1"), secret.ErrMalformed},
		{"no data", "erp-token", "v1:" + id, secret.ErrMalformed},
		{"short key id", "erp-token", "v1:abc:" + good[12:], secret.ErrMalformed},
		{"upper-case key id", "erp-token", "v1:ABCDEF12" + good[11:], secret.ErrMalformed},
		{"not base64url", "erp-token", good + "!", secret.ErrMalformed},
		{"padded", "erp-token", good + "==", secret.ErrMalformed},
		{"too short", "erp-token", "v1:" + id + ":AAAA", secret.ErrMalformed},
		{"other key", "erp-token", mustSeal(t, sealer(t, 2), "erp-token", plaintext), secret.ErrWrongKey},
		{"other name", "crm-token", good, secret.ErrAuthentication},
		{"tampered nonce", "erp-token", tamper(t, good, 0), secret.ErrAuthentication},
		{"tampered ciphertext", "erp-token", tamper(t, good, 12), secret.ErrAuthentication},
		{"tampered tag", "erp-token", tamper(t, good, -1), secret.ErrAuthentication},
		{"truncated", "erp-token", good[:len(good)-4], secret.ErrAuthentication},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Open(tt.secret, tt.sealed)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open(%q, %.30q) = %q, %v, want %v", tt.secret, tt.sealed, got, err, tt.want)
			}
			if strings.Contains(err.Error(), plaintext) {
				t.Errorf("Open error %q contains the value", err)
			}
		})
	}
}

func TestOpenWrongKeyNamesBothKeys(t *testing.T) {
	mine, theirs := sealer(t, 1), sealer(t, 2)
	_, err := mine.Open("x", mustSeal(t, theirs, "x", "v"))
	want := "sealed with key " + theirs.KeyID() + ", this server has key " + mine.KeyID()
	if err == nil || err.Error() != want {
		t.Errorf("Open(other key) err = %v, want %q", err, want)
	}
}

func secretResource(name, spec string) config.Resource {
	return config.Resource{
		APIVersion: config.APIVersion,
		Kind:       "Secret",
		Metadata:   config.Metadata{Name: name, Labels: map[string]string{"team": "erp"}},
		Spec:       json.RawMessage(spec),
	}
}

func TestPrepare(t *testing.T) {
	s := sealer(t, 1)
	sealed := mustSeal(t, s, "erp-token", "t0ken")
	canonical := `{"description":"ERP","sealed":"` + sealed + `"}`
	agent := config.Resource{APIVersion: config.APIVersion, Kind: "Agent", Metadata: config.Metadata{Name: "erp-token"}, Spec: json.RawMessage(`{"value":"not a secret"}`)}
	tests := []struct {
		name string
		in   config.Resource
		want config.Resource
	}{
		{"value is sealed", secretResource("erp-token", `{"description":"ERP","value":"t0ken"}`), secretResource("erp-token", canonical)},
		{"sealed is kept", secretResource("erp-token", canonical), secretResource("erp-token", canonical)},
		{"sealed is made canonical", secretResource("erp-token", `{ "sealed": "`+sealed+`", "description": "ERP" }`), secretResource("erp-token", canonical)},
		{"other kinds pass through", agent, agent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Prepare(tt.in)
			if err != nil {
				t.Fatalf("Prepare(%s) err = %v", tt.in.Spec, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Prepare(%s) (-want +got):\n%s", tt.in.Spec, diff)
			}
		})
	}
}

func TestPrepareErrors(t *testing.T) {
	s := sealer(t, 1)
	sealed := mustSeal(t, s, "erp-token", "t0ken")
	tests := []struct {
		name string
		in   config.Resource
		want error // nil: any error
	}{
		{"other key", secretResource("erp-token", `{"sealed":"`+mustSeal(t, sealer(t, 2), "erp-token", "t0ken")+`"}`), secret.ErrWrongKey},
		{"other name", secretResource("crm-token", `{"sealed":"`+sealed+`"}`), secret.ErrAuthentication},
		{"not sealed", secretResource("erp-token", `{"sealed":"t0ken"}`), secret.ErrMalformed},
		{"both", secretResource("erp-token", `{"value":"t0ken","sealed":"`+sealed+`"}`), nil},
		{"neither", secretResource("erp-token", `{"description":"d"}`), nil},
		{"unknown field", secretResource("erp-token", `{"value":"t0ken","extra":1}`), nil},
		{"not an object", secretResource("erp-token", `"t0ken"`), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Prepare(tt.in)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Prepare(%s) = %s, %v, want error %v", tt.in.Spec, got.Spec, err, tt.want)
			}
			if strings.Contains(err.Error(), "t0ken") {
				t.Errorf("Prepare error %q contains the value", err)
			}
		})
	}
}

func TestPrepareWrongKeySaysWhatToDo(t *testing.T) {
	mine, theirs := sealer(t, 1), sealer(t, 2)
	_, err := mine.Prepare(secretResource("x", `{"sealed":"`+mustSeal(t, theirs, "x", "v")+`"}`))
	for _, want := range []string{"spec.sealed", "sealed with another key", theirs.KeyID(), mine.KeyID(), "--secrets-key"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Prepare(other key) err = %v, want it to mention %q", err, want)
		}
	}
}
