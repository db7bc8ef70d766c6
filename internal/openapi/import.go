package openapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Tool is one operation of an OpenAPI document, as a tool an agent can call.
type Tool struct {
	// Name is "<source>.<operationId>", or "<source>.<method>_<path>" for an
	// operation without operationId; unique within one import.
	Name string `json:"name"`
	// OperationID is the operation's key for Options.Overrides: its
	// operationId, or the derived name for an operation without one.
	OperationID string `json:"operationId"`
	// Description is the operation's summary and description.
	Description string `json:"description"`
	// Method is the HTTP method, upper case: "GET".
	Method string `json:"method"`
	// Path is the path template as the document writes it: "/pet/{petId}".
	Path string `json:"path"`
	// Deprecated is set when the document marks the operation deprecated.
	Deprecated bool `json:"deprecated,omitempty"`
	// InputSchema is a JSON Schema (draft 2020-12) for the arguments: an
	// object with one property per parameter and one for the request body.
	InputSchema json.RawMessage `json:"inputSchema"`
	// OutputSchema is a JSON Schema (draft 2020-12) for the JSON content of
	// the first 2xx response; nil when that response has no JSON content.
	OutputSchema json.RawMessage `json:"outputSchema,omitempty"`
	// Annotations are the hints for agents and policy.
	Annotations Annotations `json:"annotations"`
	// Params says where each property of the input goes in the request, in
	// the order the document declares them, the body last.
	Params []Param `json:"params,omitempty"`
}

// Annotations are hints about what calling a tool does.
type Annotations struct {
	// ReadOnly: the call changes nothing (GET, HEAD, OPTIONS, TRACE).
	ReadOnly bool `json:"readOnly"`
	// Destructive: the call may delete or overwrite irrecoverably (DELETE).
	Destructive bool `json:"destructive"`
	// Idempotent: repeating the call has no further effect (the safe
	// methods, PUT and DELETE).
	Idempotent bool `json:"idempotent"`
}

// Override changes some of an operation's Annotations; a nil field keeps
// the default derived from the method.
type Override struct {
	ReadOnly    *bool `json:"readOnly,omitempty"`
	Destructive *bool `json:"destructive,omitempty"`
	Idempotent  *bool `json:"idempotent,omitempty"`
}

// Where a Param goes in the request.
const (
	InPath   = "path"
	InQuery  = "query"
	InHeader = "header"
	InCookie = "cookie"
	InBody   = "body"
)

// Param maps one property of a tool's input onto the HTTP request.
type Param struct {
	// Property is the property's name in the input schema. It is the
	// parameter's name unless two parameters share one (then the second is
	// "<name>_<in>"). A field of an object body is its own property, named
	// as the field unless a parameter has that name (then "<name>_body");
	// a body that is not flattened is "body", or "requestBody" if a
	// parameter is already called "body".
	Property string `json:"property"`
	// In is InPath, InQuery, InHeader, InCookie or InBody.
	In string `json:"in"`
	// Name is the parameter's name in the request, or the field's name in
	// a flattened body; empty for a whole body.
	Name string `json:"name,omitempty"`
	// Required is set when the request must carry it.
	Required bool `json:"required,omitempty"`
	// Style and Explode say how to serialize a parameter (OpenAPI's
	// defaults filled in); empty and false for the body.
	Style   string `json:"style,omitempty"`
	Explode bool   `json:"explode,omitempty"`
	// AllowReserved is the parameter's allowReserved: for a path parameter,
	// it lets values hold / ? # ; [ ] % and \ (escaped); without it those
	// are refused.
	AllowReserved bool `json:"allowReserved,omitempty"`
	// MediaType is the body's media type, or a parameter's when the document
	// gives it as content rather than schema.
	MediaType string `json:"mediaType,omitempty"`
	// FieldRequired is set on a field of a flattened body that the body's
	// schema requires; BodyRequired on every field of a flattened body that
	// the operation requires. Required is set when both are.
	FieldRequired bool `json:"fieldRequired,omitempty"`
	BodyRequired  bool `json:"bodyRequired,omitempty"`
}

// Options tune an import.
type Options struct {
	// Document names the document in error messages: a path or a URL.
	Document string
	// Overrides changes the annotations of operations, keyed by
	// Tool.OperationID. A key that names no operation is an error, so that a
	// typo does not silently leave a destructive operation unmarked.
	Overrides map[string]Override
	// ReservedHeaders are header names, besides OwnHeaders, that the
	// caller of Import sets itself (an identity header, an API key's
	// header): header parameters of those names (in any case) are left
	// out of the tools' inputs.
	ReservedHeaders []string
	// Targets binds overrides to operations: an override whose
	// operationId has a target here ("GET /files/{name}", see Target)
	// applies only while the operation keeps that method and path, so that
	// an operationId re-pointed at another operation does not carry the
	// override over.
	Targets map[string]string
}

// Target names an operation by what it calls: "GET /files/{name}".
func Target(method, path string) string { return strings.ToUpper(method) + " " + path }

// OwnHeaders are the request headers corral sets and agents never do:
// header parameters of these names (in any case) are left out of a tool's
// input. The agent sends Idempotency-Key as an HTTP header of its call (or
// in MCP's _meta), and corral passes it on scoped to the agent and tool.
var OwnHeaders = []string{"Accept", "Content-Type", "Authorization", "Idempotency-Key", "Traceparent", "Tracestate"}

func reserved(headers []string, name string) bool {
	return slices.ContainsFunc(headers, func(h string) bool { return strings.EqualFold(h, name) })
}

// Import turns an OpenAPI 3.0 or 3.1 document, YAML or JSON, into one tool
// per operation, in a stable order (by path, then method). Tool names start
// with source and a dot: source is the name of the tool source the document
// describes.
//
// The input schema has one property per parameter (path, query, header and
// cookie), all required as the document says. Parameters that carry an
// apiKey security scheme's key are left out: corral supplies credentials,
// agents never do.
// A request body that is a plain object (see flatBody) is flattened: each
// of its fields is a top-level property, as an MCP tool's or a model
// function's arguments are, so that a policy reads arguments.amount
// whatever kind of tool it guards. A field named like a parameter becomes
// "<name>_body". Any other body (an array, a string, oneOf, a map with
// additionalProperties) stays one property, "body". Every $ref is inlined,
// except those that recur, which go to $defs, as do all of a schema's refs
// when inlining would make it large.
//
// Import reports every operation it cannot turn into a tool (at most 20) in
// one error, each an *Error, and then returns no tools.
func Import(source string, data []byte, opts Options) ([]Tool, error) {
	docErr := func(err error) error {
		e := &Error{Document: opts.Document, Err: err}
		if pe := (*pointerError)(nil); errors.As(err, &pe) {
			e.Pointer = pe.pointer
		}
		return e
	}
	root, err := parse(data)
	if err != nil {
		return nil, docErr(err)
	}
	s, err := newSpec(root)
	if err != nil {
		return nil, docErr(err)
	}
	s.reserved = opts.ReservedHeaders
	s.targets = opts.Targets
	ops, err := s.operations()
	if err != nil {
		return nil, docErr(err)
	}
	if err := nameOperations(source, ops); err != nil {
		return nil, docErr(err)
	}
	var errs []error
	if err := checkOverrides(ops, opts.Overrides); err != nil {
		errs = append(errs, docErr(err))
	}
	tools := make([]Tool, 0, len(ops))
	total := 0
	for _, op := range ops {
		t, size, err := s.tool(op, opts.Overrides)
		if err == nil && total+size > maxTotalValues {
			err = fmt.Errorf("%w: the tools' schemas hold more than %d values in all", ErrTooLarge, maxTotalValues)
		}
		if err != nil {
			e := docErr(err).(*Error)
			e.Operation = op.where
			errs = append(errs, e)
			if errors.Is(err, ErrTooLarge) {
				break
			}
			continue
		}
		total += size
		tools = append(tools, t)
	}
	if len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	return tools, nil
}

func newSpec(root map[string]any) (*spec, error) {
	if v, ok := root["swagger"]; ok {
		return nil, fmt.Errorf("%w: swagger %v (OpenAPI 2.0) is not supported; convert the document to OpenAPI 3 first (for example with swagger2openapi)", ErrUnsupportedVersion, v)
	}
	var version string
	switch v := root["openapi"].(type) {
	case string:
		version = v
	case json.Number:
		version = string(v) // openapi: 3.1 written unquoted
	case nil:
		return nil, fmt.Errorf("%w: not an OpenAPI document: it has no openapi field", ErrUnsupportedVersion)
	default:
		return nil, fmt.Errorf("%w: openapi must be a version string, got %s", ErrInvalid, jsonType(v))
	}
	major, rest, _ := strings.Cut(version, ".")
	minor, _, _ := strings.Cut(rest, ".")
	if major != "3" || (minor != "0" && minor != "1") {
		return nil, fmt.Errorf("%w: openapi %q (this importer reads 3.0.x and 3.1.x)", ErrUnsupportedVersion, version)
	}
	s := &spec{root: root, v30: minor == "0"}
	if d, ok := root["jsonSchemaDialect"]; ok && !s.v30 {
		switch d {
		case "https://spec.openapis.org/oas/3.1/dialect/base", draft2020:
		default:
			return nil, fmt.Errorf("%w: jsonSchemaDialect %v (only JSON Schema 2020-12 and the OpenAPI 3.1 base dialect are supported)", ErrUnsupportedVersion, d)
		}
	}
	return s, nil
}

// methods are the operations of a path item, in the order tools list them.
var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// operation is one operation found in the document.
type operation struct {
	method, path string
	at           string         // JSON pointer of the operation
	where        string         // "paths./pet/{petId}.get", for messages
	op           map[string]any // the Operation Object
	pathParams   []any          // the path item's parameters
	pathParamsAt string         // their JSON pointer
	id           string         // operationId, or the derived name
	explicit     bool           // id is the document's operationId
	name         string         // the tool's name
}

func (s *spec) operations() ([]*operation, error) {
	pv, ok := s.root["paths"]
	if !ok {
		return nil, nil // OpenAPI 3.1 allows a document of webhooks or components only
	}
	paths, ok := pv.(map[string]any)
	if !ok {
		return nil, errAt("/paths", "%w: paths must be an object, got %s", ErrInvalid, jsonType(pv))
	}
	var ops []*operation
	for _, path := range sortedKeys(paths) {
		if strings.HasPrefix(path, "x-") {
			continue
		}
		at := "/paths/" + escape(path)
		if !strings.HasPrefix(path, "/") {
			return nil, errAt(at, "%w: path %q must start with /", ErrInvalid, path)
		}
		item, itemAt, err := s.object(paths[path], at, "a path item")
		if err != nil {
			return nil, fmt.Errorf("paths.%s: %w", path, err)
		}
		var params []any
		if p, ok := item["parameters"]; ok {
			if params, ok = p.([]any); !ok {
				return nil, errAt(itemAt+"/parameters", "%w: paths.%s: parameters must be an array, got %s", ErrInvalid, path, jsonType(p))
			}
		}
		for _, m := range methods {
			v, ok := item[m]
			if !ok {
				continue
			}
			op, ok := v.(map[string]any)
			if !ok {
				return nil, errAt(itemAt+"/"+m, "%w: paths.%s.%s must be an object, got %s", ErrInvalid, path, m, jsonType(v))
			}
			ops = append(ops, &operation{
				method: m, path: path, at: itemAt + "/" + m, where: "paths." + path + "." + m,
				op: op, pathParams: params, pathParamsAt: itemAt + "/parameters",
			})
		}
	}
	return ops, nil
}

// nameOperations gives every operation its id and a unique tool name:
// operationIds first, so that they keep their names, then the derived ones.
func nameOperations(source string, ops []*operation) error {
	byID := map[string]*operation{}
	for _, op := range ops {
		v, ok := op.op["operationId"]
		if !ok {
			continue
		}
		id, ok := v.(string)
		if !ok || id == "" {
			return errAt(op.at+"/operationId", "%w: %s: operationId must be a non-empty string", ErrInvalid, op.where)
		}
		if other, dup := byID[id]; dup {
			return errAt(op.at+"/operationId", "%w: operationId %q is used by both %s and %s", ErrInvalid, id, other.where, op.where)
		}
		byID[id] = op
		op.id, op.explicit = id, true
	}
	taken := map[string]bool{}
	unique := func(base string) string {
		name := base
		for i := 2; taken[name]; i++ {
			name = base + "_" + strconv.Itoa(i)
		}
		taken[name] = true
		return name
	}
	for _, op := range ops {
		if op.explicit {
			op.name = source + "." + unique(sanitize(op.id, "_-"))
		}
	}
	for _, op := range ops {
		if !op.explicit {
			op.id = unique(derivedName(op.method, op.path))
			op.name = source + "." + op.id
		}
	}
	return nil
}

// derivedName names an operation without operationId after its method and
// path: GET /pets/{petId} is get_pets_petId.
func derivedName(method, path string) string {
	parts := []string{method}
	for seg := range strings.SplitSeq(path, "/") {
		seg = strings.NewReplacer("{", "", "}", "").Replace(seg)
		if seg != "" {
			parts = append(parts, sanitize(seg, "_"))
		}
	}
	if len(parts) == 1 {
		parts = append(parts, "root")
	}
	return strings.Join(parts, "_")
}

func checkOverrides(ops []*operation, overrides map[string]Override) error {
	known := map[string]bool{}
	for _, op := range ops {
		known[op.id] = true
	}
	var unknown []string
	for id := range overrides {
		if !known[id] {
			unknown = append(unknown, strconv.Quote(id))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return fmt.Errorf("overrides: no operation has the operationId %s", strings.Join(unknown, ", "))
	}
	return nil
}

// annotate derives an operation's annotations from its method, then applies
// its override.
func annotate(method string, o Override, hasOverride bool) (Annotations, error) {
	var a Annotations
	switch method {
	case "get", "head", "options", "trace":
		a = Annotations{ReadOnly: true, Idempotent: true}
	case "put":
		a = Annotations{Idempotent: true}
	case "delete":
		a = Annotations{Destructive: true, Idempotent: true}
	}
	if !hasOverride {
		return a, nil
	}
	for _, f := range []struct {
		v   *bool
		dst *bool
	}{{o.ReadOnly, &a.ReadOnly}, {o.Destructive, &a.Destructive}, {o.Idempotent, &a.Idempotent}} {
		if f.v != nil {
			*f.dst = *f.v
		}
	}
	if a.ReadOnly && a.Destructive {
		return a, errors.New("overrides: an operation cannot be both readOnly and destructive")
	}
	return a, nil
}

// tool builds the tool of one operation and reports the size of its schemas.
func (s *spec) tool(op *operation, overrides map[string]Override) (Tool, int, error) {
	o, has := overrides[op.id]
	if want, bound := s.targets[op.id]; has && bound && want != Target(op.method, op.path) {
		has = false // written for another operation
	}
	ann, err := annotate(op.method, o, has)
	if err != nil {
		return Tool{}, 0, err
	}
	t := Tool{
		Name:        op.name,
		OperationID: op.id,
		Description: describe(op),
		Method:      strings.ToUpper(op.method),
		Path:        op.path,
		Deprecated:  op.op["deprecated"] == true,
		Annotations: ann,
	}
	var in map[string]any
	inSize, err := expand(s, func(c *schemas) (err error) {
		in, t.Params, err = s.input(op, c)
		return err
	})
	if err != nil {
		return Tool{}, 0, err
	}
	var out map[string]any
	outSize, err := expand(s, func(c *schemas) (err error) {
		out, err = s.output(op, c)
		return err
	})
	if err != nil {
		return Tool{}, 0, err
	}
	size := inSize + outSize
	if t.InputSchema, err = compiled(in); err != nil {
		return Tool{}, 0, fmt.Errorf("input schema: %w", err)
	}
	if out != nil {
		if t.OutputSchema, err = compiled(out); err != nil {
			return Tool{}, 0, fmt.Errorf("output schema: %w", err)
		}
	}
	return t, size, nil
}

// expand runs build, which makes one schema root, first inlining every
// $ref; if that proves too large, again with every $ref in $defs. It returns
// the number of values the schema holds.
func expand(s *spec, build func(*schemas) error) (int, error) {
	c := newSchemas(s, false, inlineLimit)
	err := build(c)
	if errors.Is(err, errInlineTooLarge) {
		c = newSchemas(s, true, maxDocValues)
		err = build(c)
	}
	return c.size, err
}

func describe(op *operation) string {
	summary, _ := op.op["summary"].(string)
	description, _ := op.op["description"].(string)
	summary, description = strings.TrimSpace(summary), strings.TrimSpace(description)
	switch {
	case summary == "" && description == "":
		return strings.ToUpper(op.method) + " " + op.path
	case description == "" || description == summary:
		return summary
	case summary == "":
		return description
	}
	return summary + "\n\n" + description
}

// input builds the input schema of an operation and says where each of its
// properties goes.
func (s *spec) input(op *operation, c *schemas) (map[string]any, []Param, error) {
	type declared struct {
		p  map[string]any
		at string
	}
	// The operation's parameters replace the path item's of the same name
	// and location.
	var list []declared
	index := map[[2]string]int{}
	add := func(raw []any, at string, override bool) error {
		for i, v := range raw {
			pat := at + "/" + strconv.Itoa(i)
			p, pat, err := s.object(v, pat, "a parameter")
			if err != nil {
				return err
			}
			name, _ := p["name"].(string)
			in, _ := p["in"].(string)
			if name == "" {
				return errAt(pat, "%w: parameter %d has no name", ErrInvalid, i)
			}
			switch in {
			case InPath, InQuery, InHeader, InCookie:
			default:
				return errAt(pat, "%w: parameter %s: in must be path, query, header or cookie, got %v", ErrInvalid, name, p["in"])
			}
			key := [2]string{in, name}
			if j, dup := index[key]; dup {
				if !override {
					return errAt(pat, "%w: parameter %s in %s is declared twice", ErrInvalid, name, in)
				}
				list[j] = declared{p, pat}
				continue
			}
			index[key] = len(list)
			list = append(list, declared{p, pat})
		}
		return nil
	}
	if err := add(op.pathParams, op.pathParamsAt, false); err != nil {
		return nil, nil, err
	}
	if v, ok := op.op["parameters"]; ok {
		raw, ok := v.([]any)
		if !ok {
			return nil, nil, errAt(op.at+"/parameters", "%w: parameters must be an array, got %s", ErrInvalid, jsonType(v))
		}
		if err := add(raw, op.at+"/parameters", true); err != nil {
			return nil, nil, err
		}
	}

	// A path template variable the document does not declare still has
	// to be filled in: it becomes a required string.
	for _, v := range templateVars(op.path) {
		if _, ok := index[[2]string{InPath, v}]; !ok {
			index[[2]string{InPath, v}] = len(list)
			list = append(list, declared{map[string]any{"name": v, "in": InPath, "required": true, "schema": map[string]any{"type": "string"}}, op.at})
		}
	}

	props := map[string]any{}
	var required []any
	var params []Param
	property := func(name, in string) string {
		prop := name
		if _, taken := props[prop]; taken {
			prop = name + "_" + in
		}
		for i := 2; ; i++ {
			if _, taken := props[prop]; !taken {
				return prop
			}
			prop = name + "_" + in + "_" + strconv.Itoa(i)
		}
	}
	for _, d := range list {
		p := d.p
		name, in := p["name"].(string), p["in"].(string)
		// OpenAPI: header parameters named Accept, Content-Type or
		// Authorization are ignored; the client sets those. corral sets
		// others itself (OwnHeaders, Options.ReservedHeaders): an agent
		// that could fill them in would send its raw Idempotency-Key,
		// unscoped, or speak for corral. A parameter that carries an API key
		// is a credential, which corral holds and an agent must never see
		// or supply.
		if in == InHeader && (reserved(OwnHeaders, name) || reserved(s.reserved, name)) {
			continue
		}
		if s.isAPIKey(in, name) {
			continue
		}
		req := p["required"] == true || in == InPath
		schema, schemaAt, mediaType, err := parameterSchema(p, d.at)
		if err != nil {
			return nil, nil, fmt.Errorf("parameter %s: %w", name, err)
		}
		x, err := c.schema(schema, schemaAt, 1)
		if err != nil {
			return nil, nil, fmt.Errorf("parameter %s: %w", name, err)
		}
		extra := map[string]any{}
		if desc, ok := p["description"].(string); ok && strings.TrimSpace(desc) != "" {
			extra["description"] = desc
		}
		if p["deprecated"] == true {
			extra["deprecated"] = true
		}
		prop := property(name, in)
		props[prop] = withAnnotations(asObject(x), extra)
		if req {
			required = append(required, prop)
		}
		style, explode, err := serialization(p, in, d.at)
		if err != nil {
			return nil, nil, fmt.Errorf("parameter %s: %w", name, err)
		}
		params = append(params, Param{Property: prop, In: in, Name: name, Required: req, Style: style, Explode: explode,
			AllowReserved: p["allowReserved"] == true, MediaType: mediaType})
	}

	if v, ok := op.op["requestBody"]; ok {
		rb, rbAt, err := s.object(v, op.at+"/requestBody", "the request body")
		if err != nil {
			return nil, nil, fmt.Errorf("request body: %w", err)
		}
		content, ok := rb["content"].(map[string]any)
		if !ok {
			return nil, nil, errAt(rbAt, "%w: request body: content must be an object", ErrInvalid)
		}
		if mediaType := pickMediaType(content, true); mediaType != "" {
			mat := rbAt + "/content/" + escape(mediaType)
			mt, ok := content[mediaType].(map[string]any)
			if !ok {
				return nil, nil, errAt(mat, "%w: request body: media type %s must be an object", ErrInvalid, mediaType)
			}
			var x any = map[string]any{}
			if schema, ok := mt["schema"]; ok {
				if x, err = c.schema(schema, mat+"/schema", 1); err != nil {
					return nil, nil, fmt.Errorf("request body: %w", err)
				}
			}
			req := rb["required"] == true
			if fields, ok := flatBody(x, c); ok {
				required, params = addBodyFields(props, fields, required, params, req, mediaType)
			} else {
				required, params = addWholeBody(props, rb, x, required, params, req, mediaType)
			}
		}
	}

	schema := map[string]any{
		"type":                 "object",
		"properties":           props,
		"additionalProperties": false,
	}
	if len(required) > 0 {
		schema["required"] = required
	}
	if dep := bodyDependencies(params); len(dep) > 0 {
		schema["dependentRequired"] = dep
	}
	return c.root(schema), params, nil
}

// addWholeBody adds a body that is not flattened as one property, "body"
// (or "requestBody", "requestBody_2", ... when a parameter has that name).
func addWholeBody(props map[string]any, rb map[string]any, x any, required []any, params []Param, req bool, mediaType string) ([]any, []Param) {
	extra := map[string]any{}
	if desc, ok := rb["description"].(string); ok && strings.TrimSpace(desc) != "" {
		extra["description"] = desc
	}
	prop := "body"
	if _, taken := props[prop]; taken {
		prop = "requestBody"
		for i := 2; props[prop] != nil; i++ {
			prop = "requestBody_" + strconv.Itoa(i)
		}
	}
	props[prop] = withAnnotations(asObject(x), extra)
	if req {
		required = append(required, prop)
	}
	return required, append(params, Param{Property: prop, In: InBody, Required: req, MediaType: mediaType})
}

// bodyFields is an object body that can be flattened: its properties in
// sorted order, and which of them the body requires.
type bodyFields struct {
	names    []string
	props    map[string]any
	required map[string]bool
}

// flatBodyKeywords are the keywords an object body's schema may have and
// still be flattened into top-level arguments: nothing else about the body
// as a whole is lost when its properties move up.
var flatBodyKeywords = map[string]bool{
	"type": true, "properties": true, "required": true, "additionalProperties": true,
	"title": true, "description": true, "examples": true, "deprecated": true,
}

// flatBody reports whether a request body's (expanded) schema is a plain
// object whose properties can become top-level arguments: type object (or
// no type), declared properties, additionalProperties absent or false, and
// no keyword that constrains the body as a whole (allOf, oneOf,
// minProperties, patternProperties, ...). A $ref to $defs is followed once.
func flatBody(x any, c *schemas) (bodyFields, bool) {
	s, ok := x.(map[string]any)
	if !ok {
		return bodyFields{}, false
	}
	if ref, ok := s["$ref"].(string); ok && len(s) == 1 {
		name, ok := strings.CutPrefix(ref, "#/$defs/")
		if !ok {
			return bodyFields{}, false
		}
		if s, ok = c.defs[name].(map[string]any); !ok {
			return bodyFields{}, false
		}
	}
	for k, v := range s {
		if !flatBodyKeywords[k] {
			return bodyFields{}, false
		}
		if k == "type" && v != "object" || k == "additionalProperties" && v != false {
			return bodyFields{}, false
		}
	}
	props, ok := s["properties"].(map[string]any)
	if !ok || len(props) == 0 {
		return bodyFields{}, false
	}
	if _, ok := props[""]; ok {
		return bodyFields{}, false // a field needs a name to stand beside the parameters
	}
	f := bodyFields{names: sortedKeys(props), props: props, required: map[string]bool{}}
	if list, ok := s["required"].([]any); ok {
		for _, r := range list {
			if name, ok := r.(string); ok {
				f.required[name] = true
			}
		}
	}
	return f, true
}

// addBodyFields makes each property of an object body a top-level argument,
// in sorted order. Parameters keep their names: a body field whose name a
// parameter (or an earlier field) has taken becomes "<name>_body", then
// "<name>_body_2", ... A field is required when the body is required and
// the body requires it; an optional body's required fields are tied together
// by dependentRequired (see bodyDependencies).
func addBodyFields(props map[string]any, f bodyFields, required []any, params []Param, req bool, mediaType string) ([]any, []Param) {
	for _, name := range f.names {
		prop := name
		if _, taken := props[prop]; taken {
			prop = name + "_body"
			for i := 2; props[prop] != nil; i++ {
				prop = name + "_body_" + strconv.Itoa(i)
			}
		}
		props[prop] = f.props[name]
		fieldReq := req && f.required[name]
		if fieldReq {
			required = append(required, prop)
		}
		params = append(params, Param{Property: prop, In: InBody, Name: name, Required: fieldReq, MediaType: mediaType,
			FieldRequired: f.required[name], BodyRequired: req})
	}
	return required, params
}

// bodyDependencies ties the fields an optional object body requires to
// each other and to its other fields: sending any field of the body means
// sending the body, which must then have its required fields.
func bodyDependencies(params []Param) map[string]any {
	var fields, needed []string
	for _, p := range params {
		if p.In != InBody || p.Name == "" || p.Required {
			continue
		}
		fields = append(fields, p.Property)
		if p.FieldRequired {
			needed = append(needed, p.Property)
		}
	}
	if len(needed) == 0 {
		return nil
	}
	dep := map[string]any{}
	for _, f := range fields {
		var others []any
		for _, n := range needed {
			if n != f {
				others = append(others, n)
			}
		}
		if len(others) > 0 {
			dep[f] = others
		}
	}
	return dep
}

// isAPIKey reports whether a parameter is where an apiKey security scheme
// of the document puts its key.
func (s *spec) isAPIKey(in, name string) bool {
	components, _ := s.root["components"].(map[string]any)
	schemes, _ := components["securitySchemes"].(map[string]any)
	for k, v := range schemes {
		scheme, _, err := s.object(v, "/components/securitySchemes/"+escape(k), "a security scheme")
		if err != nil || scheme["type"] != "apiKey" || scheme["in"] != in {
			continue // a broken scheme is not this package's concern
		}
		if n, _ := scheme["name"].(string); n == name || in == InHeader && strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// templateVars returns the variables of a path template: petId for
// /pet/{petId}.
func templateVars(path string) []string {
	var vars []string
	for {
		_, rest, ok := strings.Cut(path, "{")
		if !ok {
			return vars
		}
		name, after, ok := strings.Cut(rest, "}")
		if !ok {
			return vars
		}
		if name != "" {
			vars = append(vars, name)
		}
		path = after
	}
}

// parameterSchema finds a parameter's schema: its schema, or the schema of
// its one content media type.
func parameterSchema(p map[string]any, at string) (schema any, schemaAt, mediaType string, err error) {
	if v, ok := p["schema"]; ok {
		return v, at + "/schema", "", nil
	}
	if v, ok := p["content"]; ok {
		content, ok := v.(map[string]any)
		if !ok || len(content) != 1 {
			return nil, "", "", errAt(at+"/content", "%w: content must hold exactly one media type", ErrInvalid)
		}
		for mt, v := range content {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, "", "", errAt(at+"/content/"+escape(mt), "%w: media type %s must be an object", ErrInvalid, mt)
			}
			if schema, ok := m["schema"]; ok {
				return schema, at + "/content/" + escape(mt) + "/schema", mt, nil
			}
			return map[string]any{}, "", mt, nil
		}
	}
	return map[string]any{}, "", "", nil // no schema: any value
}

// serialization returns a parameter's style and explode, with OpenAPI's
// defaults: form (exploded) for query and cookie, simple for path and header.
func serialization(p map[string]any, in, at string) (string, bool, error) {
	style := "simple"
	if in == InQuery || in == InCookie {
		style = "form"
	}
	if v, ok := p["style"]; ok {
		s, ok := v.(string)
		if !ok || s == "" {
			return "", false, errAt(at+"/style", "%w: style must be a string", ErrInvalid)
		}
		style = s
	}
	explode := style == "form"
	if v, ok := p["explode"]; ok {
		b, ok := v.(bool)
		if !ok {
			return "", false, errAt(at+"/explode", "%w: explode must be a boolean", ErrInvalid)
		}
		explode = b
	}
	return style, explode, nil
}

// output builds the output schema of an operation from the JSON content of
// its first 2xx response; nil if there is none.
func (s *spec) output(op *operation, c *schemas) (map[string]any, error) {
	v, ok := op.op["responses"]
	if !ok {
		return nil, nil
	}
	responses, ok := v.(map[string]any)
	if !ok {
		return nil, errAt(op.at+"/responses", "%w: responses must be an object, got %s", ErrInvalid, jsonType(v))
	}
	var code string
	for _, k := range sortedKeys(responses) {
		// Exact codes sort before the 2XX range, which they take
		// precedence over.
		if len(k) == 3 && k[0] == '2' && (isDigit(k[1]) && isDigit(k[2]) || strings.EqualFold(k[1:], "XX")) {
			code = k
			break
		}
	}
	if code == "" {
		return nil, nil
	}
	resp, rat, err := s.object(responses[code], op.at+"/responses/"+escape(code), "a response")
	if err != nil {
		return nil, fmt.Errorf("response %s: %w", code, err)
	}
	cv, ok := resp["content"]
	if !ok {
		return nil, nil
	}
	content, ok := cv.(map[string]any)
	if !ok {
		return nil, errAt(rat+"/content", "%w: response %s: content must be an object", ErrInvalid, code)
	}
	mediaType := pickMediaType(content, false)
	if mediaType == "" {
		return nil, nil
	}
	mat := rat + "/content/" + escape(mediaType)
	mt, ok := content[mediaType].(map[string]any)
	if !ok {
		return nil, errAt(mat, "%w: response %s: media type %s must be an object", ErrInvalid, code, mediaType)
	}
	schema, ok := mt["schema"]
	if !ok {
		return nil, nil
	}
	x, err := c.schema(schema, mat+"/schema", 0)
	if err != nil {
		return nil, fmt.Errorf("response %s: %w", code, err)
	}
	return c.root(x), nil
}

// pickMediaType chooses the media type to use: JSON first (application/json,
// then any +json or json type), then, for a request body only, forms, then
// the first in sorted order. It returns "" if none fits.
func pickMediaType(content map[string]any, request bool) string {
	if _, ok := content["application/json"]; ok {
		return "application/json"
	}
	keys := sortedKeys(content)
	for _, k := range keys {
		if isJSON(k) {
			return k
		}
	}
	if !request {
		return ""
	}
	for _, want := range []string{"application/x-www-form-urlencoded", "multipart/form-data"} {
		if _, ok := content[want]; ok {
			return want
		}
	}
	if len(keys) > 0 {
		return keys[0]
	}
	return ""
}

func isJSON(mediaType string) bool {
	mt, _, _ := strings.Cut(strings.ToLower(mediaType), ";")
	mt = strings.TrimSpace(mt)
	_, sub, ok := strings.Cut(mt, "/")
	return ok && (sub == "json" || strings.HasSuffix(sub, "+json"))
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// compiled encodes a schema and checks that it compiles, so that no tool
// reaches the argument validator with a schema it cannot use.
func compiled(schema map[string]any) (json.RawMessage, error) {
	// Not json.Marshal: it escapes <, > and & in descriptions, which costs
	// a model tokens and readability for nothing.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(schema); err != nil {
		return nil, err
	}
	data := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if err := compile(data); err != nil {
		return nil, err
	}
	return data, nil
}

// compile compiles a schema as corral's argument validation would: draft
// 2020-12, and no loading of other documents (Import never emits a $ref that
// needs one).
func compile(schema []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	const url = "mem:///schema.json"
	if err := c.AddResource(url, v); err != nil {
		return err
	}
	if _, err := c.Compile(url); err != nil {
		return fmt.Errorf("%w: does not compile: %v", ErrInvalid, err)
	}
	return nil
}

// noLoader refuses to load schemas from anywhere: the compiler's default
// would read local files.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("loading %s is not allowed", url)
}
