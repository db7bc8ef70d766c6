package policy

import _ "embed"

//go:embed default.rego
var defaultRego string

// DefaultName is the module name of the built-in default bundle.
const DefaultName = "builtin/default.rego"

// DefaultModules returns the built-in default bundle: an agent may call
// the tools and models its Agent resource lists, and destructive tools need
// a human's approval. `corral policy show-default` prints it.
func DefaultModules() []Module {
	return []Module{{Name: DefaultName, Source: defaultRego}}
}
