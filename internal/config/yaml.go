package config

import "go.yaml.in/yaml/v3"

// Limits that keep a hostile stream from costing more than a large honest
// one: nesting (stack depth) and values produced (alias expansion), the
// latter counted across every document of the stream.
const (
	maxDepth = 64
	maxNodes = 100_000
)

// isEmpty reports whether a document holds nothing (only comments, or "~").
func isEmpty(doc *yaml.Node) bool {
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	return doc.Kind == 0 || doc.Kind == yaml.DocumentNode ||
		(doc.Kind == yaml.ScalarNode && doc.ShortTag() == "!!null")
}
