package identity

import (
	"net/http"
	"strings"
)

// BearerToken reads "Authorization: Bearer <token>", the way every corral
// credential arrives; the scheme is case-insensitive (RFC 9110). It returns
// "" when there is none.
func BearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
