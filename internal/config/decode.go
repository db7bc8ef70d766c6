package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"go.yaml.in/yaml/v3"

	"github.com/corral-dev/corral/internal/schemamsg"
	"github.com/corral-dev/corral/internal/yamljson"
)

// Document is one resource read from a file, with where it came from.
type Document struct {
	Source   string
	Index    int // position in Source, from 1
	Resource Resource
}

// Limits on what one stream (a file, or a request body) may cost and report.
const (
	// maxDocuments caps the documents of one stream. Together with the value
	// budget (maxNodes), it keeps a body of many small documents from costing
	// more than a large honest file.
	maxDocuments = 1000
	// maxProblems caps the problems reported for one document: past that, the
	// list helps nobody and only costs memory.
	maxProblems = 50
	// maxTotalProblems caps the problems that Decode, and Load across all its
	// files, report in all.
	maxTotalProblems = 100
)

// Decode reads every document in data (YAML, several documents separated by
// "---", or JSON) and validates each one. It returns the documents only when
// all of them are valid; otherwise it returns Errors listing the problems of
// every document, each naming source, document and field, at most 50 for one
// document and 100 in all (see Errors.Truncate). Empty documents are skipped
// but still counted, so document numbers match what the user sees. A stream
// may hold at most 1000 documents and 100,000 values in all (an alias counts
// each time it is used).
func Decode(source string, data []byte) ([]Document, error) {
	docs, errs := decode(source, data)
	if len(errs) > 0 {
		return nil, errs.Truncate(maxTotalProblems)
	}
	return docs, nil
}

// decode is Decode returning the valid documents alongside the errors, so that
// Load can also report duplicates among the documents that were valid. The
// errors are not truncated, so that Load can count them across files; there
// are at most about maxDocuments × (maxProblems+1) of them.
func decode(source string, data []byte) ([]Document, Errors) {
	var (
		docs []Document
		errs Errors
	)
	// One budget for the whole stream: per document, a body of many small
	// documents could each expand aliases to just under the limit.
	conv := yamljson.New(yamljson.Limits{MaxDepth: maxDepth, MaxValues: maxNodes})
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for index := 1; ; index++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The YAML stream cannot be read past a syntax error.
			errs = append(errs, FieldError{Source: source, Document: index, Message: "malformed YAML: " + syntaxMessage(data, err)})
			break
		}
		if isEmpty(&node) {
			continue // an empty document, such as a trailing "---"
		}
		// Documents count as they are numbered, empty ones included; only
		// empty ones past the limit, such as a trailing "---", get by.
		if index > maxDocuments {
			errs = append(errs, FieldError{Source: source, Document: index, Message: fmt.Sprintf("the file holds more than %d documents; split it", maxDocuments)})
			break
		}
		value, err := conv.Convert(&node)
		if err != nil {
			fe := FieldError{Source: source, Document: index, Message: err.Error()}
			var ye *yamljson.Error
			if errors.As(err, &ye) {
				fe.Field, fe.Message = yamljson.FieldPath(ye.Path), ye.Message
			}
			errs = append(errs, fe)
			if conv.Exhausted() {
				break // every later document would fail the same way
			}
			continue
		}
		res, problems := Validate(value)
		for _, p := range problems {
			p.Source, p.Document = source, index
			errs = append(errs, p)
		}
		if len(problems) == 0 {
			docs = append(docs, Document{Source: source, Index: index, Resource: res})
		}
	}
	return docs, errs
}

// DecodeJSON validates one resource sent as JSON, as the HTTP API receives it.
func DecodeJSON(data []byte) (Resource, []FieldError) {
	value, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return Resource{}, []FieldError{{Message: "malformed JSON: " + err.Error()}}
	}
	return Validate(value)
}

// Validate checks one document, given as a JSON value (maps, slices, strings,
// json.Number, bools and nil, as jsonschema.UnmarshalJSON returns), against
// its kind's schema and MaxResourceBytes, and returns the resource with its
// spec in canonical form. The returned problems, at most 50 and then one
// saying how many more there are, carry Resource and Field but no Source or
// Document.
func Validate(value any) (Resource, []FieldError) {
	return validate(value, MaxResourceBytes)
}

// validate is Validate with the size limit as a parameter: no resource of
// today's kinds reaches MaxResourceBytes, so tests check the limit with a
// smaller one.
func validate(value any, maxBytes int) (Resource, []FieldError) {
	obj, ok := value.(map[string]any)
	if !ok {
		return Resource{}, []FieldError{{Message: "a resource must be a mapping with apiVersion, kind, metadata and spec, got " + jsonType(value)}}
	}
	label := documentLabel(obj)
	kindName, ok := obj["kind"].(string)
	if !ok {
		msg := "required"
		if obj["kind"] != nil {
			msg = "must be string, got " + jsonType(obj["kind"])
		}
		return Resource{}, []FieldError{{Resource: label, Field: "kind", Message: msg}}
	}
	k, err := LookupKind(kindName)
	if err != nil || k.Name != kindName {
		// Documents spell the kind exactly; the CLI's lenient lookup is for people typing.
		return Resource{}, []FieldError{{Resource: label, Field: "kind", Message: fmt.Sprintf("unknown kind %q (known kinds: %s)", kindName, KindNames())}}
	}
	problems := labelProblems(obj)
	if err := k.validator().Validate(value); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			problems = append(problems, schemaProblems(ve, value)...)
		} else {
			problems = append(problems, FieldError{Message: err.Error()})
		}
	}
	if len(problems) > 0 {
		problems = Errors(sortProblems(problems)).Truncate(maxProblems)
		for i := range problems {
			problems[i].Resource = label
		}
		return Resource{}, problems
	}

	// The document is valid: decode it into the typed form and canonicalise the spec.
	encoded, err := json.Marshal(value)
	if err != nil {
		return Resource{}, []FieldError{{Resource: label, Message: "encode: " + err.Error()}}
	}
	var res Resource
	if err := json.Unmarshal(encoded, &res); err != nil {
		return Resource{}, []FieldError{{Resource: label, Message: "decode: " + err.Error()}}
	}
	spec, err := k.DecodeSpec(res.Spec)
	if err != nil {
		// The schema admitted something the Go type cannot hold: a bug in the
		// schema, reported rather than stored.
		return Resource{}, []FieldError{{Resource: label, Field: "spec", Message: err.Error()}}
	}
	if c, ok := spec.(checker); ok {
		if problems := c.check(); len(problems) > 0 {
			problems = Errors(sortProblems(problems)).Truncate(maxProblems)
			for i := range problems {
				problems[i].Resource = label
			}
			return Resource{}, problems
		}
	}
	if res.Spec, err = json.Marshal(spec); err != nil {
		return Resource{}, []FieldError{{Resource: label, Field: "spec", Message: err.Error()}}
	}
	res.Metadata.Updated = time.Time{} // server-set; ignored on input
	stored, err := json.Marshal(res)
	if err != nil {
		return Resource{}, []FieldError{{Resource: label, Message: "encode: " + err.Error()}}
	}
	if len(stored) > maxBytes {
		return Resource{}, []FieldError{{Resource: label, Message: fmt.Sprintf("the resource is %d bytes; at most %d", len(stored), maxBytes)}}
	}
	return res, nil
}

// labelKey is the shape of a label key: an optional DNS-style prefix and "/",
// then a name. It is checked here rather than with the schema's propertyNames,
// whose errors the schema library reports at the wrong instance location
// (santhosh-tekuri/jsonschema#269).
var labelKey = regexp.MustCompile(`^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)

// ValidLabelKey reports whether key is a valid label key.
func ValidLabelKey(key string) bool { return labelKey.MatchString(key) }

func labelProblems(obj map[string]any) []FieldError {
	meta, _ := obj["metadata"].(map[string]any)
	labels, _ := meta["labels"].(map[string]any)
	var out []FieldError
	for key := range labels {
		if !labelKey.MatchString(key) {
			out = append(out, FieldError{Field: "metadata.labels", Message: fmt.Sprintf("invalid key %q: use letters, digits, '-', '_' and '.', at most 63, starting and ending with a letter or digit, after an optional DNS-style prefix and '/'", key)})
		}
	}
	return out
}

// documentLabel names a document for messages as well as it can: "Agent/impact",
// "Agent" when the name is missing, "" when even the kind is.
func documentLabel(obj map[string]any) string {
	kindName, _ := obj["kind"].(string)
	var name string
	if meta, ok := obj["metadata"].(map[string]any); ok {
		name, _ = meta["name"].(string)
	}
	switch {
	case kindName != "" && name != "":
		return kindName + "/" + name
	case kindName != "":
		return kindName
	case name != "":
		return "?/" + name
	}
	return ""
}

// yamlMessage turns "yaml: line 3: cannot unmarshal ..." into
// "line 3: cannot unmarshal ...".
func yamlMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// schemaProblems flattens a validation error tree into one problem per
// violated leaf, with messages written for people.
func schemaProblems(ve *jsonschema.ValidationError, instance any) []FieldError {
	var out []FieldError
	for _, v := range schemamsg.Flatten(ve) {
		field := yamljson.FieldPath(instancePath(v.Location, instance))
		msg := v.Message
		if p, ok := v.Kind.(*kind.Pattern); ok && field == "metadata.name" {
			msg = fmt.Sprintf("%q is not a valid name: use lowercase letters, digits and '-', start and end with a letter or digit, at most 63 characters", p.Got)
		}
		out = append(out, FieldError{Field: field, Message: msg})
	}
	return out
}

// sortProblems sorts problems by field, then message, and drops duplicates,
// which schema combinators can produce.
func sortProblems(problems []FieldError) []FieldError {
	sort.SliceStable(problems, func(i, j int) bool {
		if problems[i].Field != problems[j].Field {
			return problems[i].Field < problems[j].Field
		}
		return problems[i].Message < problems[j].Message
	})
	return slices.Compact(problems)
}

// instancePath renders a JSON pointer's tokens, marking array indices as "[i]"
// by looking at the instance they index.
func instancePath(tokens []string, instance any) []string {
	path := make([]string, 0, len(tokens))
	cur := instance
	for _, tok := range tokens {
		switch c := cur.(type) {
		case []any:
			path = append(path, "["+tok+"]")
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(c) {
				cur = c[i]
			} else {
				cur = nil
			}
		case map[string]any:
			path = append(path, tok)
			cur = c[tok]
		default:
			path = append(path, tok)
			cur = nil
		}
	}
	return path
}

// jsonType names the JSON type of a decoded value, for messages.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number, float64, int, int64, uint64:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
