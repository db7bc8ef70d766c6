// Package openapi turns an OpenAPI document into tool definitions.
//
// Import reads an OpenAPI 3.0 or 3.1 document (YAML or JSON) and returns one
// Tool per operation: its name, description, HTTP method and path, a JSON
// Schema (draft 2020-12) for its arguments and, where the first 2xx response
// has JSON content, for its result, the hints agents and policy use
// (read-only, destructive, idempotent), and where each argument goes in the
// request. Every schema it returns compiles with santhosh-tekuri/jsonschema,
// the validator corral checks tool arguments with. It is a pure function of
// its input: it reads no files and fetches nothing.
//
// # Why a small decoder of our own
//
// We compared github.com/getkin/kin-openapi and github.com/pb33f/libopenapi.
// kin-openapi gained OpenAPI 3.1 only recently (getkin/kin-openapi#1125, after
// issue #230 stayed open for years), has changed its handling of circular
// references several times (#615, #856, #970), and pulls in a YAML fork, a
// JSON pointer library and gorilla/mux. libopenapi supports 3.1 and detects
// circular references well, but it is a large API (index, rolodex, low- and
// high-level models), brings forks of go-yaml and testify, jsonpath and a
// regex generator, and is still v0 with breaking rewrites of its resolver
// (v0.13). Both decode schemas into typed structs, whereas what we emit is
// JSON Schema: we want the schema objects as written, every keyword kept,
// rewriting only $ref and the few OpenAPI 3.0 dialect quirks (nullable,
// boolean exclusiveMinimum, example). The subset we need — paths, operations,
// parameters, request bodies, responses, and local $ref resolution — is small,
// so this package decodes it itself on top of go.yaml.in/yaml/v3, which corral
// already uses. That adds no dependency, keeps 3.0 and 3.1 on one code path,
// and lets us bound the cost of hostile input (nesting, alias expansion, $ref
// expansion) the same way internal/config does.
//
// # What it does not do
//
// Swagger 2.0 documents are refused with ErrUnsupportedVersion (convert them
// to OpenAPI 3 first). $refs must point into the same document ("#/..."):
// multi-file specs must be bundled first. $dynamicRef is refused. Webhooks,
// callbacks, links, security requirements and servers are ignored here; the
// caller supplies the base URL and credentials.
package openapi
