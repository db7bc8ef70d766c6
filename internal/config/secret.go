package config

import _ "embed"

// SecretSpec holds one credential for upstreams (ToolSource auth). The
// server seals Value before storing it: the stored and returned form carries
// only Sealed, which is useless without the server's secrets key, and can be
// applied again as it is.
type SecretSpec struct {
	// Description says what the credential is for.
	Description string `json:"description,omitempty"`
	// Value is the credential in clear, accepted on input only.
	Value string `json:"value,omitempty"`
	// Sealed is Value encrypted with the server's secrets key.
	Sealed string `json:"sealed,omitempty"`
}

func (s *SecretSpec) check() []FieldError {
	if (s.Value == "") == (s.Sealed == "") {
		return []FieldError{{Field: "spec", Message: "set exactly one of value or sealed"}}
	}
	return nil
}

//go:embed schemas/secret.json
var secretSpecSchema []byte
