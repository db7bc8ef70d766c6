package oauth

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// maxBody caps a token request: the largest legitimate one carries two
// JWTs, a few kilobytes each.
const maxBody = 64 << 10

// single are the parameters that may appear once (RFC 6749 3.2). RFC 8693
// lets audience and resource repeat; parameters corral does not know are
// ignored (RFC 6749 3.2), so they are not checked.
var single = []string{
	"grant_type", "client_id", "client_secret", "scope", "task",
	"subject_token", "subject_token_type", "actor_token", "actor_token_type",
	"requested_token_type", "client_assertion", "client_assertion_type",
}

// form is a token request's parameters.
type form url.Values

// get returns a parameter; one sent empty counts as absent (RFC 6749 3.1).
func (f form) get(name string) string {
	if v := f[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// all returns a repeatable parameter's non-empty values.
func (f form) all(name string) []string {
	var out []string
	for _, v := range f[name] {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// readForm reads and checks a token request's body: form-encoded, at most
// maxBody, each single-valued parameter at most once, none in the URL.
func readForm(w http.ResponseWriter, r *http.Request) (form, *failure) {
	if r.URL.RawQuery != "" {
		// RFC 6749 2.3.1: credentials in the URI end up in logs.
		return nil, badRequest("send the parameters in the request body, not in the URL")
	}
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, badRequest("the request must be application/x-www-form-urlencoded")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, badRequest("the request body is larger than 64 KiB")
	}
	if err != nil {
		return nil, badRequest("the request body could not be read")
	}
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, badRequest("the request body is not valid application/x-www-form-urlencoded")
	}
	for _, name := range single {
		if len(values[name]) > 1 {
			return nil, badRequest("%s is given more than once", name)
		}
	}
	return form(values), nil
}

// credentials are how the client authenticated.
type credentials struct {
	id, secret string
	basic      bool // client_secret_basic, so a 401 challenges for Basic
	// assertion is a workload's token sent as an RFC 7523 client
	// assertion (client_assertion_type jwt-bearer).
	assertion, assertionType string
}

// AssertionJWTBearer is the client_assertion_type of RFC 7523.
const AssertionJWTBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// clientCredentials reads the client's id and secret from the
// Authorization header (client_secret_basic) or the form
// (client_secret_post). Using both is refused (RFC 6749 2.3).
func clientCredentials(r *http.Request, f form) (credentials, *failure) {
	header := r.Header.Get("Authorization")
	assertion, assertionType := f.get("client_assertion"), f.get("client_assertion_type")
	if assertion != "" || assertionType != "" {
		switch {
		case header != "" || f.get("client_secret") != "":
			return credentials{}, badRequest("the client authenticated twice: a client_assertion and a client secret")
		case assertion == "":
			return credentials{}, badRequest("client_assertion_type is given without client_assertion")
		case assertionType != AssertionJWTBearer:
			return credentials{}, badRequest("client_assertion_type %q is not supported; use %s", clip(assertionType, 80), AssertionJWTBearer)
		}
		return credentials{id: f.get("client_id"), assertion: assertion, assertionType: assertionType}, nil
	}
	if header == "" {
		return credentials{id: f.get("client_id"), secret: f.get("client_secret")}, nil
	}
	scheme, _, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return credentials{}, invalidClient("authenticate with HTTP Basic (client_secret_basic) or client_id and client_secret in the body (client_secret_post)")
	}
	c := credentials{basic: true}
	rawID, rawSecret, ok := r.BasicAuth()
	if ok {
		// RFC 6749 2.3.1: both halves are form-encoded inside Basic.
		id, err1 := url.QueryUnescape(rawID)
		secret, err2 := url.QueryUnescape(rawSecret)
		c.id, c.secret, ok = id, secret, err1 == nil && err2 == nil
	}
	switch {
	case !ok:
		return c, invalidClient("the Basic credentials are malformed")
	case f.get("client_secret") != "":
		return c, badRequest("the client authenticated twice: client_secret is in both the Authorization header and the body")
	case f.get("client_id") != "" && f.get("client_id") != c.id:
		return c, badRequest("client_id in the body differs from the one in the Authorization header")
	}
	return c, nil
}
