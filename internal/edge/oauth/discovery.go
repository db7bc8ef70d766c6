package oauth

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Grant types and token types corral speaks.
const (
	GrantClientCredentials = "client_credentials"
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"

	TokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeIDToken     = "urn:ietf:params:oauth:token-type:id_token"
)

// Metadata is the RFC 8414 authorization server metadata document.
type Metadata struct {
	Issuer                            string   `json:"issuer"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	JWKSURI                           string   `json:"jwks_uri"`
	GrantTypesSupported               []string `json:"grant_types_supported"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	// ResponseTypesSupported is required by RFC 8414 but is about the
	// authorization endpoint, which corral does not have: agents never go
	// through a browser. The honest list is empty; inventing "token" or
	// "code" would send clients to an endpoint that does not exist.
	ResponseTypesSupported []string `json:"response_types_supported"`
	// private_key_jwt is an RFC 7523 client assertion: a workload's token
	// from an Issuer with use workloads, its keys that issuer's, not keys
	// registered per client, so no signing algorithms are listed.
	// tls_client_auth (RFC 8705) is a client certificate an Agent names.
	// scopes_supported is left out: scopes are each agent's own tools and
	// models, not a fixed list.
}

// MetadataFor returns the metadata of the server whose issuer is issuer.
func MetadataFor(issuer string) Metadata {
	base := strings.TrimRight(issuer, "/")
	return Metadata{
		Issuer:                            issuer,
		TokenEndpoint:                     base + TokenPath,
		JWKSURI:                           base + JWKSPath,
		GrantTypesSupported:               []string{GrantClientCredentials, GrantTokenExchange},
		TokenEndpointAuthMethodsSupported: []string{"client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth"},
		ResponseTypesSupported:            []string{},
	}
}

// jwks serves the public keys that verify corral's tokens. Verifiers may
// cache them for five minutes; one that meets a kid it does not know should
// fetch them again rather than refuse.
func (h *Handler) jwks(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(h.deps.Signer.JWKS())
}

func (h *Handler) metadata(w http.ResponseWriter, r *http.Request) {
	body, err := json.MarshalIndent(MetadataFor(h.deps.Signer.Issuer()), "", "  ")
	if err != nil { // a struct of strings always marshals
		http.Error(w, "metadata unavailable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(append(body, '\n'))
}
