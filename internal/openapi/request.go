package openapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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
	for _, p := range t.Params {
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
			err = addQuery(query, p, v)
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
			body, err = encodeBody(p.MediaType, v)
			if err == nil {
				header.Set("Content-Type", p.MediaType)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrArguments, p.Property, err)
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

// addQuery serializes one query parameter in its style: form (the default),
// spaceDelimited, pipeDelimited or deepObject.
func addQuery(q url.Values, p Param, v any) error {
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

// encodeBody encodes the body argument as mediaType says.
func encodeBody(mediaType string, v any) ([]byte, error) {
	switch {
	case isJSON(mediaType):
		return json.Marshal(v)
	case mediaType == "application/x-www-form-urlencoded":
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("a form body must be an object, got %s", jsonType(v))
		}
		form := url.Values{}
		for _, k := range sortedKeys(obj) {
			switch item := obj[k].(type) {
			case map[string]any, []any:
				b, err := json.Marshal(item)
				if err != nil {
					return nil, err
				}
				form.Add(k, string(b))
			default:
				s, _ := scalar(item)
				form.Add(k, s)
			}
		}
		return []byte(form.Encode()), nil
	}
	if s, ok := v.(string); ok {
		return []byte(s), nil
	}
	return json.Marshal(v)
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
