// Package config defines corral's declarative resources (Agent, and the kinds
// later issues add), decodes them from YAML or JSON and validates them against
// each kind's JSON Schema, reporting every problem with the file, the document
// and the field it concerns.
//
// The same code validates on the server (PUT and apply) and offline in
// `corral validate`, so a file that validates locally is accepted by the server
// of the same version.
package config
