package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConsoleOIDCFlags(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		f       consoleOIDCFlags
		wantErr string // "" is no error
		want    string // the client secret read
	}{
		{"none", consoleOIDCFlags{}, "", ""},
		{"public client", consoleOIDCFlags{issuer: "https://login.example.com/", clientID: "corral"}, "", ""},
		{"confidential client", consoleOIDCFlags{issuer: "https://login.example.com", clientID: "corral", secretFile: secret}, "", "s3cret"},
		{"client id alone", consoleOIDCFlags{clientID: "corral"}, "need --console-oidc-issuer", ""},
		{"no client id", consoleOIDCFlags{issuer: "https://login.example.com"}, "--console-oidc-client-id", ""},
		{"not a URL", consoleOIDCFlags{issuer: "login.example.com", clientID: "c"}, "--console-oidc-issuer", ""},
		{"javascript issuer", consoleOIDCFlags{issuer: "javascript:alert(1)", clientID: "c"}, "--console-oidc-issuer", ""},
		{"missing secret file", consoleOIDCFlags{issuer: "https://login.example.com", clientID: "c", secretFile: secret + ".nope"}, "--console-oidc-client-secret-file", ""},
		{"foreign redirect", consoleOIDCFlags{issuer: "https://login.example.com", clientID: "c", redirect: "https://evil.example/steal"}, "--console-oidc-redirect-url", ""},
		{"redirect", consoleOIDCFlags{issuer: "https://login.example.com", clientID: "c", redirect: "https://corral.example.com/ui/api/oidc/callback"}, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := tt.f.config()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("config() = %v, want an error naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("config() = %v", err)
			}
			if (cfg == nil) != (tt.f.issuer == "") {
				t.Fatalf("config() = %+v for issuer %q", cfg, tt.f.issuer)
			}
			if cfg != nil && (cfg.ClientSecret != tt.want || cfg.Issuer != tt.f.issuer) {
				t.Errorf("config() = %+v, want secret %q and issuer %q as given", cfg, tt.want, tt.f.issuer)
			}
		})
	}
}
