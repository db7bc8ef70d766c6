package oauth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestJWKS(t *testing.T) {
	w := newWorld(t)
	rec := httptest.NewRecorder()
	w.mux.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, JWKSPath, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s = %d, want 200", JWKSPath, rec.Code)
	}
	for k, want := range map[string]string{"Content-Type": "application/jwk-set+json", "Cache-Control": "public, max-age=300"} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("GET %s %s = %q, want %q", JWKSPath, k, got, want)
		}
	}
	if got, want := rec.Body.String(), string(w.signer.JWKS()); got != want {
		t.Errorf("GET %s body = %s, want the signer's %s", JWKSPath, got, want)
	}
}

func TestMetadata(t *testing.T) {
	for _, tt := range []struct {
		issuer string
		base   string
	}{
		{"https://corral.example.com", "https://corral.example.com"},
		{"https://corral.example.com/", "https://corral.example.com"},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
	} {
		t.Run(tt.issuer, func(t *testing.T) {
			w := newWorld(t)
			w.signer.issuer = tt.issuer
			rec := httptest.NewRecorder()
			w.mux.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, MetadataPath, nil))
			if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("GET %s = %d %q, want 200 application/json", MetadataPath, rec.Code, rec.Header().Get("Content-Type"))
			}
			var got map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"issuer":                                tt.issuer,
				"token_endpoint":                        tt.base + "/oauth2/token",
				"jwks_uri":                              tt.base + "/.well-known/jwks.json",
				"grant_types_supported":                 []any{"client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"},
				"token_endpoint_auth_methods_supported": []any{"client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth"},
				"response_types_supported":              []any{},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("metadata mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
