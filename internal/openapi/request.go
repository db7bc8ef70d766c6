package openapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Request is an HTTP request for one call of a tool: what Build makes of
// the arguments.
type Request struct {
	Method string
	URL    string
	Header http.Header
	Body   []byte
}

// ErrArguments: the arguments cannot be put into a request (a value of a
// shape the parameter's style cannot carry). Validation against the input
// schema catches nearly all of these first.
var ErrArguments = errors.New("arguments do not fit the operation")

// Build makes the HTTP request for calling t with arguments (a JSON object,
// validated against t.InputSchema), against baseURL: path parameters
// substituted and escaped, query and cookie parameters serialized in the
// document's style, header parameters set, and the body encoded as its
// media type says (JSON, form or text).
func Build(t *Tool, baseURL string, arguments json.RawMessage) (*Request, error) {
	args := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(arguments))
	dec.UseNumber()
	if err := dec.Decode(&args); err != nil {
		return nil, fmt.Errorf("%w: arguments must be a JSON object: %v", ErrArguments, err)
	}
	return BuildValue(t, baseURL, args)
}

// BuildValue is Build for arguments already decoded, numbers as
// json.Number (as jsonschema.UnmarshalJSON and a json.Decoder with
// UseNumber give them), so that a caller that validated them need not parse
// them again.
func BuildValue(t *Tool, baseURL string, args map[string]any) (*Request, error) {
	path := t.Path
	query := url.Values{}
	header := http.Header{}
	var cookies []string
	var body []byte
	var fields map[string]any // a flattened body's fields
	declared := queryNames(t.Params)
	bodyType, bodyRequired := "", false
	for _, p := range t.Params {
		if p.In == InBody && p.Name != "" {
			bodyType, bodyRequired = p.MediaType, p.BodyRequired
		}
		v, ok := args[p.Property]
		if !ok || v == nil {
			if p.Required {
				return nil, fmt.Errorf("%w: %s is required", ErrArguments, p.Property)
			}
			continue
		}
		var err error
		switch p.In {
		case InPath:
			var s string
			if err = pathSafe(p, v); err != nil {
				break
			}
			if s, err = simple(v, p.Explode, url.PathEscape); err == nil {
				if s == "" || s == "." || s == ".." {
					// Proxies and frameworks collapse dot segments, even
					// escaped: refuse rather than let ".." walk out of the path.
					err = fmt.Errorf("%q cannot be a path segment", s)
				} else {
					path = strings.ReplaceAll(path, "{"+p.Name+"}", s)
				}
			}
		case InQuery:
			err = addQuery(query, p, v, declared)
		case InHeader:
			var s string
			if s, err = simple(v, p.Explode, identity); err == nil {
				header.Set(p.Name, s)
			}
		case InCookie:
			var s string
			if s, err = simple(v, false, url.QueryEscape); err == nil {
				cookies = append(cookies, p.Name+"="+s)
			}
		case InBody:
			if p.Name != "" {
				if fields == nil {
					fields = map[string]any{}
				}
				fields[p.Name] = v
				continue
			}
			body, err = encodeBody(header, p.MediaType, v)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrArguments, p.Property, err)
		}
	}
	if fields != nil || bodyRequired {
		if fields == nil {
			fields = map[string]any{}
		}
		var err error
		if body, err = encodeBody(header, bodyType, fields); err != nil {
			return nil, fmt.Errorf("%w: body: %v", ErrArguments, err)
		}
	}
	if len(cookies) > 0 {
		header.Set("Cookie", strings.Join(cookies, "; "))
	}
	u := strings.TrimRight(baseURL, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return &Request{Method: t.Method, URL: u, Header: header, Body: body}, nil
}

func identity(s string) string { return s }

// scalar renders a JSON scalar as text.
func scalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return strconv.FormatBool(v), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("must be a string, number or boolean here, got %s", jsonType(v))
}

// simple is OpenAPI's "simple" style (path and header): arrays and objects
// as comma-separated lists; an exploded object as k=v pairs.
func simple(v any, explode bool, escape func(string) string) (string, error) {
	switch v := v.(type) {
	case []any:
		parts := make([]string, len(v))
		for i, item := range v {
			s, err := scalar(item)
			if err != nil {
				return "", err
			}
			parts[i] = escape(s)
		}
		return strings.Join(parts, ","), nil
	case map[string]any:
		var parts []string
		for _, k := range sortedKeys(v) {
			s, err := scalar(v[k])
			if err != nil {
				return "", err
			}
			if explode {
				parts = append(parts, escape(k)+"="+escape(s))
			} else {
				parts = append(parts, escape(k), escape(s))
			}
		}
		return strings.Join(parts, ","), nil
	}
	s, err := scalar(v)
	return escape(s), err
}

// pathReserved are the characters a path parameter's value may not hold
// unless the parameter sets allowReserved: those that end or split a path
// segment (/ ? # ; and \, which some servers read as /), the brackets, and
// % (an upstream that decodes twice would turn %2F into /). Escaped, they
// still reach upstreams that decode before routing.
const pathReserved = "/?#;\\[]%"

// lookalike reports whether r is not ASCII but could become a reserved
// character on an upstream that applies NFKC or a "best-fit" mapping after
// decoding (some .NET, Java and Windows stacks): fullwidth ／ and ．,
// ∕ and ⁄ for /, ∖ and ﹨ for \, and the like.
func lookalike(r rune) bool {
	if r < utf8.RuneSelf {
		return false
	}
	switch r {
	case '\u2215', '\u2044', '\u29F8', '\u2216', '\u29F5', '\u29F9':
		return true
	}
	return strings.ContainsAny(norm.NFKC.String(string(r)), pathReserved+".")
}

// pathSafe refuses a path parameter value (or any item or key of one) that
// holds a reserved character, a character that normalises to one (or to a
// dot) or a control character, or that is a dot segment or blank once
// normalised and trimmed, unless the parameter allows reserved characters.
func pathSafe(p Param, v any) error {
	if p.AllowReserved {
		return nil
	}
	check := func(s string) error {
		for _, r := range s {
			if r < 0x20 || r == 0x7f || strings.ContainsRune(pathReserved, r) || lookalike(r) {
				return fmt.Errorf("the path parameter %s may not hold %q (it does not allow reserved characters)", p.Property, r)
			}
		}
		if t := strings.TrimSpace(norm.NFKC.String(s)); t == "." || t == ".." || t == "" && s != "" {
			return fmt.Errorf("the path parameter %s may not be %q: upstreams that normalise or trim it would read a dot segment or an empty one", p.Property, s)
		}
		return nil
	}
	switch v := v.(type) {
	case string:
		return check(v)
	case []any:
		for _, item := range v {
			if err := pathSafe(p, item); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, item := range v {
			if err := check(k); err != nil {
				return err
			}
			if err := pathSafe(p, item); err != nil {
				return err
			}
		}
	}
	return nil
}

// queryNames returns the names of an operation's query parameters, in
// lower case: an exploded object's keys may not take them.
func queryNames(params []Param) map[string]bool {
	names := map[string]bool{}
	for _, p := range params {
		if p.In == InQuery {
			names[strings.ToLower(p.Name)] = true
		}
	}
	return names
}

// explodedKey refuses a key of an exploded form object that an upstream
// could read as another parameter: one that names a declared query
// parameter or one already in the query, in any case (ASP.NET and many
// Java binders ignore case), and one with characters other than letters,
// digits, _ . and - ("account[]" is account to PHP and Rails, "deep[x]" a
// deepObject parameter's field, "account " account to servers that trim).
func explodedKey(q url.Values, p Param, k string, declared map[string]bool) error {
	if k == "" || strings.IndexFunc(k, func(r rune) bool { return !plainKeyRune(r) }) >= 0 {
		return fmt.Errorf("the key %q of %s may hold only letters, digits, _ . and - (an upstream could read it as another parameter)", k, p.Property)
	}
	taken := declared[strings.ToLower(k)]
	for name := range q {
		taken = taken || strings.EqualFold(name, k)
	}
	if taken {
		return fmt.Errorf("the key %q of %s collides with a query parameter of that name (in any case); refused rather than sent twice", k, p.Property)
	}
	return nil
}

func plainKeyRune(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '.' || r == '-'
}

// addQuery serializes one query parameter in its style: form (the default),
// spaceDelimited, pipeDelimited or deepObject. An exploded form object's
// keys become query parameters of their own, so a key that an upstream
// could read as a declared query parameter, or one already in the query, is
// refused (explodedKey): it would let the caller send ?account=victim beside
// the checked ?account=mine.
func addQuery(q url.Values, p Param, v any, declared map[string]bool) error {
	switch v := v.(type) {
	case []any:
		items := make([]string, len(v))
		for i, item := range v {
			s, err := scalar(item)
			if err != nil {
				return err
			}
			items[i] = s
		}
		switch {
		case p.Style == "form" && p.Explode:
			q[p.Name] = append(q[p.Name], items...)
		case p.Style == "spaceDelimited":
			q.Add(p.Name, strings.Join(items, " "))
		case p.Style == "pipeDelimited":
			q.Add(p.Name, strings.Join(items, "|"))
		default:
			q.Add(p.Name, strings.Join(items, ","))
		}
	case map[string]any:
		var pairs []string
		for _, k := range sortedKeys(v) {
			s, err := scalar(v[k])
			if err != nil {
				return err
			}
			switch {
			case p.Style == "deepObject":
				q.Add(p.Name+"["+k+"]", s)
			case p.Explode:
				if err := explodedKey(q, p, k, declared); err != nil {
					return err
				}
				q.Add(k, s)
			default:
				pairs = append(pairs, k, s)
			}
		}
		if len(pairs) > 0 {
			q.Add(p.Name, strings.Join(pairs, ","))
		}
	default:
		s, err := scalar(v)
		if err != nil {
			return err
		}
		q.Add(p.Name, s)
	}
	return nil
}

// encodeBody encodes the body argument as mediaType says and sets the
// request's Content-Type: JSON, a URL-encoded form, multipart/form-data
// (with its boundary), or a string's text as it is.
func encodeBody(h http.Header, mediaType string, v any) ([]byte, error) {
	var body []byte
	var err error
	contentType := mediaType
	switch {
	case isJSON(mediaType):
		body, err = json.Marshal(v)
	case mediaType == "application/x-www-form-urlencoded":
		body, err = encodeForm(v)
	case mediaType == "multipart/form-data":
		body, contentType, err = encodeMultipart(v)
	default:
		if s, ok := v.(string); ok {
			body = []byte(s)
		} else {
			body, err = json.Marshal(v)
		}
	}
	if err != nil {
		return nil, err
	}
	h.Set("Content-Type", contentType)
	return body, nil
}

// formFields returns a form body's fields, in sorted order, as text: a
// scalar as itself, an object or array as JSON (its second result says so).
func formFields(v any, each func(name, value string, isJSON bool) error) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("a form body must be an object, got %s", jsonType(v))
	}
	for _, k := range sortedKeys(obj) {
		switch item := obj[k].(type) {
		case map[string]any, []any:
			b, err := json.Marshal(item)
			if err != nil {
				return err
			}
			if err := each(k, string(b), true); err != nil {
				return err
			}
		default:
			s, _ := scalar(item)
			if err := each(k, s, false); err != nil {
				return err
			}
		}
	}
	return nil
}

func encodeForm(v any) ([]byte, error) {
	form := url.Values{}
	err := formFields(v, func(name, value string, _ bool) error {
		form.Add(name, value)
		return nil
	})
	return []byte(form.Encode()), err
}

// encodeMultipart encodes an object as multipart/form-data, one part per
// field (objects and arrays as application/json parts), and returns the
// Content-Type with its boundary.
func encodeMultipart(v any) ([]byte, string, error) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	err := formFields(v, func(name, value string, isJSON bool) error {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", mime.FormatMediaType("form-data", map[string]string{"name": name}))
		if isJSON {
			h.Set("Content-Type", "application/json")
		}
		part, err := w.CreatePart(h)
		if err != nil {
			return err
		}
		_, err = io.WriteString(part, value)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	if err := w.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), w.FormDataContentType(), nil
}

// Servers returns the URLs of a document's servers list, in order; relative
// URLs are returned as written.
func Servers(data []byte) []string {
	root, err := parse(data)
	if err != nil {
		return nil
	}
	list, _ := root["servers"].([]any)
	var out []string
	for _, s := range list {
		if m, ok := s.(map[string]any); ok {
			if u, ok := m["url"].(string); ok && u != "" {
				out = append(out, u)
			}
		}
	}
	return out
}
