package identity

import (
	"errors"
	"testing"

	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity/oidctest"
)

// checkRefusal fails unless Verify returned a result and no error, or a
// *TokenError with a reason and no result.
func checkRefusal(t *testing.T, token string, gotResult bool, err error) {
	t.Helper()
	var te *TokenError
	switch {
	case err == nil && !gotResult:
		t.Fatalf("Verify(%q) = nil, nil", token)
	case err != nil && (!errors.As(err, &te) || te.Reason == "" || gotResult):
		t.Fatalf("Verify(%q) = result %v, %v: want a *TokenError with a reason and no result", token, gotResult, err)
	}
}

func FuzzSignerVerify(f *testing.F) {
	clk := newClock()
	s := openTestSigner(f, bustest.Open(f), f.TempDir(), SignerOptions{Now: clk.now})
	for _, tt := range signerCases(f, s, clk.now()) {
		f.Add(tt.token)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := s.Verify(token, "")
		checkRefusal(t, token, c != nil, err)
	})
}

func FuzzIssuersVerify(f *testing.F) {
	clk := newClock()
	p := oidctest.Start(f, oidctest.PublishSymmetricKey())
	down := oidctest.Start(f)
	down.SetDown(true)
	old := p.Token(f, userClaims(p, clk.now()))
	p.Rotate(f)
	is := newTestIssuers(f, clk,
		issuerResource(f, "idp", config.IssuerSpec{Issuer: p.URL(), Audience: testAudience}),
		issuerResource(f, "down", config.IssuerSpec{Issuer: down.URL(), Audience: testAudience}))
	for _, tt := range issuerCases(f, p, down, old, clk.now()) {
		f.Add(tt.token)
	}
	f.Fuzz(func(t *testing.T, token string) {
		ext, err := is.Verify(t.Context(), token)
		checkRefusal(t, token, ext != nil, err)
	})
}
