package cli

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/pflag"

	"github.com/corral-dev/corral/internal/console"
	"github.com/corral-dev/corral/internal/identity"
)

// consoleOIDCFlags are corral up's flags for signing in to the web console
// through an identity provider.
type consoleOIDCFlags struct {
	issuer, clientID, secretFile, redirect string
}

func (f *consoleOIDCFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.issuer, "console-oidc-issuer", "", "offer sign-in to the web console through this OpenID provider (its issuer URL; an Issuer resource must trust it with the client id as audience)")
	fl.StringVar(&f.clientID, "console-oidc-client-id", "", "the web console's client id at --console-oidc-issuer")
	fl.StringVar(&f.secretFile, "console-oidc-client-secret-file", "", "file holding the client secret (none: a public client, PKCE only)")
	fl.StringVar(&f.redirect, "console-oidc-redirect-url", "", "the callback registered at the provider (default: the browser's origin + /ui/api/oidc/callback)")
}

// config checks the flags and reads the secret; nil when not asked for.
func (f *consoleOIDCFlags) config() (*console.OIDC, error) {
	if f.issuer == "" {
		if f.clientID != "" || f.secretFile != "" || f.redirect != "" {
			return nil, errors.New("--console-oidc-client-id, --console-oidc-client-secret-file and --console-oidc-redirect-url need --console-oidc-issuer")
		}
		return nil, nil
	}
	if u, err := url.Parse(f.issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("--console-oidc-issuer: %q is not an http(s) URL", f.issuer)
	}
	if f.clientID == "" {
		return nil, errors.New("--console-oidc-issuer needs --console-oidc-client-id")
	}
	if f.redirect != "" {
		if u, err := url.Parse(f.redirect); err != nil || u.Host == "" || !strings.HasSuffix(u.Path, "/ui/api/oidc/callback") {
			return nil, fmt.Errorf("--console-oidc-redirect-url: %q must be an absolute URL ending in /ui/api/oidc/callback", f.redirect)
		}
	}
	cfg := &console.OIDC{Issuer: f.issuer, ClientID: f.clientID, RedirectURL: f.redirect}
	if f.secretFile != "" {
		secret, err := identity.ReadToken(f.secretFile)
		if err != nil {
			return nil, fmt.Errorf("--console-oidc-client-secret-file: %w", err)
		}
		cfg.ClientSecret = secret
	}
	return cfg, nil
}
