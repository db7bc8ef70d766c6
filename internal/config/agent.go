package config

import _ "embed"

// AgentSpec declares an agent: an identity that calls tools, models and other
// agents through corral. Later issues add the model, instructions, tools and
// limits of hosted agents.
type AgentSpec struct {
	// Description says what the agent is for; shown in listings.
	Description string `json:"description,omitempty"`
}

//go:embed schemas/agent.json
var agentSpecSchema []byte
