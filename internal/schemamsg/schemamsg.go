// Package schemamsg words JSON Schema violations for people: one message per
// violated leaf, each with the location of the value it concerns. Resource
// validation and tool argument validation both report through it.
package schemamsg

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Violation is one violated rule.
type Violation struct {
	// Location is the JSON pointer's tokens to the value concerned; for a
	// missing or unknown property, the property itself.
	Location []string
	Message  string
	// Kind is the library's description, for callers that word some
	// violations their own way.
	Kind jsonschema.ErrorKind
}

// Pointer renders Location as an RFC 6901 JSON pointer: "/body/tags/0".
func (v Violation) Pointer() string {
	var b strings.Builder
	for _, tok := range v.Location {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(tok))
	}
	return b.String()
}

// Flatten returns the leaves of a validation error tree, in the library's
// order; a missing or unknown property each gets its own violation.
func Flatten(ve *jsonschema.ValidationError) []Violation {
	var out []Violation
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		at := func(extra string) []string {
			return append(append([]string(nil), e.InstanceLocation...), extra)
		}
		switch k := e.ErrorKind.(type) {
		case *kind.Required:
			for _, m := range k.Missing {
				out = append(out, Violation{Location: at(m), Message: "required", Kind: k})
			}
		case *kind.AdditionalProperties:
			for _, p := range k.Properties {
				out = append(out, Violation{Location: at(p), Message: "unknown field", Kind: k})
			}
		default:
			out = append(out, Violation{Location: e.InstanceLocation, Message: Message(e.ErrorKind), Kind: k})
		}
	}
	walk(ve)
	return out
}

var englishPrinter = message.NewPrinter(language.English)

// Message words one violation for people.
func Message(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Type:
		return fmt.Sprintf("must be %s, got %s", strings.Join(k.Want, " or "), k.Got)
	case *kind.Const:
		return fmt.Sprintf("must be %s", jsonText(k.Want))
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = jsonText(w)
		}
		return "must be one of " + strings.Join(want, ", ")
	case *kind.Minimum:
		return "must be >= " + k.Want.FloatString(ratDigits(k.Want.IsInt()))
	case *kind.Maximum:
		return "must be <= " + k.Want.FloatString(ratDigits(k.Want.IsInt()))
	case *kind.ExclusiveMinimum:
		return "must be > " + k.Want.FloatString(ratDigits(k.Want.IsInt()))
	case *kind.ExclusiveMaximum:
		return "must be < " + k.Want.FloatString(ratDigits(k.Want.IsInt()))
	case *kind.MinLength:
		return fmt.Sprintf("must be at least %d characters", k.Want)
	case *kind.MaxLength:
		return fmt.Sprintf("must be at most %d characters", k.Want)
	case *kind.MinItems:
		return fmt.Sprintf("must have at least %d items", k.Want)
	case *kind.MaxItems:
		return fmt.Sprintf("must have at most %d items", k.Want)
	case *kind.MaxProperties:
		return fmt.Sprintf("must have at most %d entries, got %d", k.Want, k.Got)
	case *kind.Pattern:
		return fmt.Sprintf("%q does not match %s", k.Got, k.Want)
	case *kind.Format:
		return fmt.Sprintf("must be a valid %s", k.Want)
	}
	return k.LocalizedString(englishPrinter)
}

func ratDigits(isInt bool) int {
	if isInt {
		return 0
	}
	return 6
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
