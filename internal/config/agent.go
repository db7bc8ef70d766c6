package config

import _ "embed"

// AgentSpec declares an agent: an identity that calls tools, models and other
// agents through corral. Later issues add the model, instructions and limits
// of hosted agents.
type AgentSpec struct {
	// Description says what the agent is for; shown in listings.
	Description string `json:"description,omitempty"`
	// Tools lists the tools the agent may call: full names ("erp.get_order")
	// or globs ("erp.*", "*.get_*"). A tool that matches none is refused and
	// is not listed to the agent.
	Tools []string `json:"tools,omitempty"`
	// Models lists the models the agent may use, as names or globs.
	Models []string `json:"models,omitempty"`
	// CaptureContent records the agent's prompts, completions, tool
	// arguments and answers in its traces, redacted and capped.
	CaptureContent bool `json:"captureContent,omitempty"`
}

//go:embed schemas/agent.json
var agentSpecSchema []byte
