package config

import (
	"encoding/json"
	"regexp"
	"time"
)

// APIVersion is the apiVersion every resource document carries.
const APIVersion = "corral.dev/v1"

// MaxResourceBytes caps the size of one resource in its stored form (the JSON
// encoding of Resource). The substrate stores a resource as one message, and
// NATS refuses messages over its max_payload (1 MB by default); the margin
// leaves room for the server-set fields and for kinds that grow.
const MaxResourceBytes = 256 << 10

// Resource is one declarative resource: a kind, a name and a spec. Its Spec
// holds the canonical JSON of the kind's spec type (see Kind.DecodeSpec), so
// two resources with equal specs have byte-equal Spec values.
//
// A Resource handed out by the registry is shared: treat it as read-only.
type Resource struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   Metadata        `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// Metadata names a resource and carries what the server records about it.
type Metadata struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	// Revision is set by the server: the substrate's revision of the stored
	// resource. On input it is optional; when present, an update applies only
	// if the stored revision is still this one (optimistic concurrency).
	Revision uint64 `json:"revision,omitempty"`
	// Updated is set by the server: when this revision was stored. Ignored on input.
	Updated time.Time `json:"updated,omitzero"`
	// UID is set by the server when the resource is created and kept by
	// every update: it tells one incarnation of a name from the next. An
	// agent's keys and tokens carry it, so a deleted agent's credentials do
	// not come back with a new agent of the same name. Ignored on input.
	UID string `json:"uid,omitempty"`
}

// namePattern is the pattern of metadata.name in schemas/metadata.json; a
// test keeps the two the same.
var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidName reports whether name can be a resource's metadata.name: lowercase
// letters, digits and '-', starting and ending with a letter or digit, at most
// 63 characters. No resource of any kind has a name for which it is false.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// ID returns "Kind/name", the way messages and the CLI refer to a resource.
func (r Resource) ID() string { return r.Kind + "/" + r.Metadata.Name }

// SameContent reports whether r and o declare the same thing: same kind, name,
// labels and spec. Server-set fields (revision, updated) are not compared.
func (r Resource) SameContent(o Resource) bool {
	if r.Kind != o.Kind || r.Metadata.Name != o.Metadata.Name || len(r.Metadata.Labels) != len(o.Metadata.Labels) {
		return false
	}
	for k, v := range r.Metadata.Labels {
		if ov, ok := o.Metadata.Labels[k]; !ok || ov != v {
			return false
		}
	}
	return string(r.Spec) == string(o.Spec)
}
