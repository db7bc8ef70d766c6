package cli

import (
	"fmt"
	"strings"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/demo"
)

// The port-strike story's resources. The agents' scripts are in
// internal/demo/story.go; who the agents are, what they may use and what
// governs them is here.

// storyRegion is where Agent/negotiation and its Model are placed; the
// demo's worker carries the label, as `corral worker --labels` would.
const storyRegion = "eu-private"

// storyModels says what the agents think with: the demo world's scripted
// model server, or a real OpenAI-compatible model (--model-url).
type storyModels struct {
	baseURL, model string
	keyEnv         string // the environment variable holding the key; "" none
	real           bool
}

// storyAgent is one agent of the story.
type storyAgent struct {
	name, description, instructions string
	tools, agents                   []string
	limits                          string // YAML flow mapping
	placement                       bool
}

var storyCast = []storyAgent{
	{name: demo.Monitor, description: "Watches ports and carriers for disruptions.",
		instructions: "You are started by an event from the shipping API. Find the shipments the disruption holds up with logistics.list_delayed_shipments, then hand the work to agent impact with a short brief.",
		tools:        []string{"logistics.list_delayed_shipments"}, agents: []string{demo.Impact}, limits: "{maxTurns: 6}"},
	{name: demo.Impact, description: "Finds the customer orders a disruption delays, and who placed them.",
		instructions: "Read the ERP: the orders on the held shipment (erp.list_orders) and their customers (erp.get_customer). Record the delayed orders in the task's shared state, then hand the work to agent negotiation with the orders, their values and the customers' names, e-mails and payment details.",
		tools:        []string{"erp.list_orders", "erp.get_customer"}, agents: []string{demo.Negotiation}, limits: "{maxTurns: 8}"},
	{name: demo.Negotiation, description: "Negotiates alternative routes with carriers, on a private model in " + storyRegion + ".",
		instructions: "Find another route for the delayed orders: the carriers' alternatives (carriers.list_alternatives) and a binding quote (carriers.get_quote). You may ask agent chaser for an ETA and agent broker for spot quotes. Record your proposal in the task's shared state, then hand the work to agent execution: which orders, which route and quote, and the surcharge per order.",
		tools:        []string{"carriers.list_alternatives", "carriers.get_quote"}, agents: []string{demo.Impact, demo.Chaser, demo.Broker, demo.Execution}, limits: "{maxTurns: 12}", placement: true},
	{name: demo.Execution, description: "Carries out an agreed reroute: the system of record, the customers, billing.",
		instructions: "Carry out the reroute you are given: write it to the ERP (erp.reroute_orders; a person approves it), look up each customer (erp.get_customer), tell each one by e-mail (notifications.send_notification), and bill each the surcharge (billing.create_invoice). Then say what you did.",
		tools:        []string{"erp.reroute_orders", "erp.get_customer", "notifications.send_notification", "billing.create_invoice"}, limits: "{maxTurns: 8}"},
	{name: demo.Chaser, description: "Chases carriers for arrival times.",
		instructions: "Get a firm ETA for the shipment from carriers.get_eta.",
		tools:        []string{"carriers.get_eta"}, limits: "{maxTurns: 8, repeatedCalls: 3}"},
	{name: demo.Broker, description: "Asks the spot market for quotes.",
		instructions: "Get quotes for the orders on each alternative route (carriers.get_quote) and say which is cheapest.",
		tools:        []string{"carriers.get_quote"}, limits: "{maxTurns: 6}"},
}

// modelName is the Model resource an agent thinks with.
func modelName(agent string) string { return agent + "-model" }

// storyResources are the documents the demo applies: a Model and an Agent
// for each of the cast, the policy that sends writes to the system of
// record to a person, the broker's budget and, when the server has
// triggers, the shipping API's webhook.
func storyResources(m storyModels, f demo.Features, triggers bool, webhookSecret string) ([]config.Document, error) {
	var b strings.Builder
	doc := func(format string, args ...any) {
		if b.Len() > 0 {
			b.WriteString("---\n")
		}
		fmt.Fprintf(&b, format, args...)
	}
	for _, a := range storyCast {
		region, redact, pricing := "on-premises", `"off"`, "{inputPerMTok: 0.20, outputPerMTok: 0.80}"
		if a.placement {
			// Negotiation's model is another provider's: customer data is
			// replaced by placeholders before it leaves, and put back after.
			region, redact, pricing = storyRegion, "reversible", "{inputPerMTok: 3.00, outputPerMTok: 15.00}"
		}
		provider := "model: " + a.name
		if m.real {
			provider = "model: " + m.model
		}
		auth := ""
		if m.keyEnv != "" {
			auth = fmt.Sprintf("\n  auth: {bearer: {env: %s}}", m.keyEnv)
		}
		doc(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: %s}
spec:
  description: What Agent/%s thinks with.
  provider: openai
  baseURL: %s
  %s%s
  region: %s
  redact: %s
  pricing: %s
  maxOutputTokens: 1024
`, modelName(a.name), a.name, m.baseURL, provider, auth, region, redact, pricing)
		extra := ""
		if f.Agents && len(a.agents) > 0 {
			extra += fmt.Sprintf("\n  agents: [%s]", strings.Join(a.agents, ", "))
		}
		if a.placement {
			extra += fmt.Sprintf("\n  placement: {region: %s}", storyRegion)
		}
		doc(`apiVersion: corral.dev/v1
kind: Agent
metadata:
  name: %s
  labels: {story: port-strike}
spec:
  description: %q
  model: %s
  models: [%s]
  tools: [%s]
  instructions: %q
  limits: %s%s
`, a.name, a.description, modelName(a.name), modelName(a.name), strings.Join(a.tools, ", "), a.instructions, a.limits, extra)
	}
	doc(`apiVersion: corral.dev/v1
kind: Policy
metadata: {name: system-of-record}
spec:
  description: A write to the ERP waits for one of logistics-leads.
  rego: |
    package corral.authz

    erp_write if {
      input.action.kind == "tool"
      input.action.target == "erp.reroute_orders"
    }

    require_approval contains "rerouting orders changes the system of record: a logistics lead approves it" if {
      allow
      erp_write
    }

    obligations.approvers := ["logistics-leads"] if erp_write
    obligations.ttl := "1h" if erp_write
`)
	doc(`apiVersion: corral.dev/v1
kind: Budget
metadata: {name: broker-spot}
spec:
  description: The broker may make two calls (model or tool) in all.
  scope: {agent: %s}
  window: total
  limit: {calls: 2}
`, demo.Broker)
	if triggers {
		doc(`apiVersion: corral.dev/v1
kind: Secret
metadata: {name: shipping-webhook}
spec: {value: %q}
---
apiVersion: corral.dev/v1
kind: Trigger
metadata: {name: port-events}
spec:
  description: The shipping API's port disruptions start Agent/monitor.
  start: {agent: %s}
  webhook:
    secret: {secretRef: shipping-webhook}
    signature: github
`, webhookSecret, demo.Monitor)
	}
	return config.Decode("demo", []byte(b.String()))
}
