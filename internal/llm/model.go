package llm

import "github.com/corral-dev/corral/internal/config"

// Model is a Model resource made ready to call: a concrete model with its
// provider, or a route over concrete models.
type Model struct {
	// Name is the resource's name, which agents ask for.
	Name     string
	Revision uint64
	Labels   map[string]string
	Spec     *config.ModelSpec
	// Provider is set for a concrete model.
	Provider Provider
}

// IsRoute reports whether the model is a route over other models.
func (m *Model) IsRoute() bool { return m.Spec.Route != nil }

// ProviderModel is the name the provider knows the model by.
func (m *Model) ProviderModel() string {
	if m.Spec.Model != "" {
		return m.Spec.Model
	}
	return m.Name
}
