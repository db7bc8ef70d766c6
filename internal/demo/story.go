package demo

import (
	"strings"
)

// The port-strike story's cast: the hosted agents `corral demo` runs, each
// with a Model of its own name at the demo world's model server.
const (
	Monitor     = "monitor"     // notices the strike (a signed webhook starts it)
	Impact      = "impact"      // reads the ERP: which orders, which customers
	Negotiation = "negotiation" // another region, its own model: asks carriers for routes
	Execution   = "execution"   // writes the system of record (after approval), notifies, bills
	Chaser      = "chaser"      // misbehaves: asks for the same ETA again and again
	Broker      = "broker"      // overspends: stopped by its budget
)

// Story features: what the scripts may use of corral, decided by what the
// server offers (StoryScripts renders the same story either way).
type Features struct {
	// Agents: hosted agents call agents with corral's delegate_to_<agent>
	// and handoff_to_<agent> functions (Agent.spec.agents). Without it,
	// each agent ends with what it would have handed on, and the demo
	// starts the next one.
	Agents bool
	// State names the function that changes the task tree's shared state
	// with a JSON merge patch, {"patch": {...}} ("" when the server has
	// none): impact writes the delayed orders there, negotiation its
	// proposal.
	State string
}

// Special functions in the story, rendered by StoryScripts.
const (
	handoffFn  = "handoff:"
	delegateFn = "delegate:"
	stateFn    = "state:write"
)

func handoff(agent, input string) Call {
	return Call{Function: handoffFn + agent, Args: map[string]any{"input": input}}
}
func delegate(agent, input string) Call {
	return Call{Function: delegateFn + agent, Args: map[string]any{"input": input}}
}
func tool(name string, args map[string]any) Call { return Call{Function: name, Args: args} }
func state(patch map[string]any) Call {
	return Call{Function: stateFn, Args: map[string]any{"patch": patch}}
}

// The customers' data, as the ERP holds it (and impact hands it on).
const (
	AnaEmail = "ana.lima@example.com"
	BenEmail = "ben.okafor@example.org"
	anaCard  = "4111 1111 1111 1111"
	benIBAN  = "DE89 3704 0044 0532 0130 00"
)

// NegotiationBrief is what impact hands negotiation: customer data that
// negotiation's model must not see in the clear.
const NegotiationBrief = "Held by the Rotterdam strike (shipment SHP-17, 72 h): ORD-1001, 1,200 EUR, Ana Lima (" + AnaEmail + ", card " + anaCard +
	"); ORD-1002, 860 EUR, Ben Okafor (" + BenEmail + ", IBAN " + benIBAN + "). Find them another route."

// story is the port strike, turn by turn, as each agent's model plays it.
// Edit here to change what the agents do; tools are named as corral
// catalogues them ("erp.list_orders").
func story() map[string][]Turn {
	orders := []any{"ORD-1001", "ORD-1002"}
	return map[string][]Turn{
		Monitor: {
			{Say: "A strike is reported at Rotterdam. Which shipments does it hold up?",
				Calls: []Call{tool("logistics.list_delayed_shipments", map[string]any{"min_hours": 24})}},
			{Say: "SHP-17 is held 72 hours at Rotterdam. Handing over to impact.",
				Calls: []Call{handoff(Impact, "Strike at the port of Rotterdam: shipment SHP-17 (NorthFreight) is held 72 hours. Find the customer orders it delays and who placed them.")}},
		},
		Impact: {
			{Say: "Which orders ride on SHP-17?", Calls: []Call{tool("erp.list_orders", map[string]any{"shipment": "SHP-17"})}},
			{Say: "Two orders, 2,060 EUR. Who placed them?", Calls: []Call{
				tool("erp.get_customer", map[string]any{"customer_id": "C-1"}),
				tool("erp.get_customer", map[string]any{"customer_id": "C-2"})}},
			{Say: "Recording the delayed orders for the team.", Calls: []Call{state(map[string]any{"delayed_orders": []any{
				map[string]any{"order": "ORD-1001", "customer": "C-1", "value_eur": 1200},
				map[string]any{"order": "ORD-1002", "customer": "C-2", "value_eur": 860}}})}},
			{Say: "Handing over to negotiation to find another route.", Calls: []Call{handoff(Negotiation, NegotiationBrief)}},
		},
		Negotiation: {
			{Say: "Let me have impact double-check these orders first.",
				Calls: []Call{delegate(Impact, "Double-check the orders held on SHP-17.")}},
			{Say: "Then I need a firm ETA for SHP-17 from the carrier.",
				Calls: []Call{delegate(Chaser, "Get a firm ETA for SHP-17 from NorthFreight.")}},
			{Say: "No ETA while the strike lasts. What else can carry the cargo?",
				Calls: []Call{tool("carriers.list_alternatives", map[string]any{"shipment_id": "SHP-17"})}},
			{Say: "Let the broker try the spot market as well.",
				Calls: []Call{delegate(Broker, "Get spot-market quotes for moving ORD-1001 and ORD-1002.")}},
			{Say: "Rail via Antwerp is one day late instead of three. A binding quote:",
				Calls: []Call{tool("carriers.get_quote", map[string]any{"route_id": "RT-ANR-RAIL", "orders": orders})}},
			{Say: "Recording the proposal.", Calls: []Call{state(map[string]any{"proposal": map[string]any{
				"route_id": "RT-ANR-RAIL", "quote_id": "Q-ANR-RAIL-2", "orders": orders, "extra_days": 1, "surcharge_eur": 190}})}},
			{Say: "Proposal: reroute ORD-1001 (<EMAIL_1>) and ORD-1002 (<EMAIL_2>) by rail via Antwerp, quote Q-ANR-RAIL-2, one day late, 190 EUR each. Handing over to execution.",
				Calls: []Call{handoff(Execution, "Reroute ORD-1001 and ORD-1002 to RT-ANR-RAIL (quote Q-ANR-RAIL-2), tell both customers, and bill each the 190 EUR surcharge.")}},
		},
		Chaser: {
			{Say: "Asking NorthFreight for the ETA.", Calls: []Call{tool("carriers.get_eta", map[string]any{"shipment_id": "SHP-17"})}},
			{Say: "Unknown. Asking again.", Calls: []Call{tool("carriers.get_eta", map[string]any{"shipment_id": "SHP-17"})}},
			{Say: "Still unknown. Asking again.", Calls: []Call{tool("carriers.get_eta", map[string]any{"shipment_id": "SHP-17"})}},
			{Say: "Still unknown. Asking again.", Calls: []Call{tool("carriers.get_eta", map[string]any{"shipment_id": "SHP-17"})}},
			{Say: "Giving up: no ETA."},
		},
		Broker: {
			{Say: "Quoting Hamburg by sea.", Calls: []Call{tool("carriers.get_quote", map[string]any{"route_id": "RT-HAM-SEA", "orders": orders})}},
			{Say: "Quoting Antwerp by rail.", Calls: []Call{tool("carriers.get_quote", map[string]any{"route_id": "RT-ANR-RAIL", "orders": orders})}},
			{Say: "Hamburg by sea is cheapest."},
		},
		Execution: {
			{Say: "Writing the new route to the ERP.", Calls: []Call{tool("erp.reroute_orders", map[string]any{"orders": orders, "route_id": "RT-ANR-RAIL", "quote_id": "Q-ANR-RAIL-2"})}},
			{Say: "Rerouted. Who do I tell?", Calls: []Call{
				tool("erp.get_customer", map[string]any{"customer_id": "C-1"}),
				tool("erp.get_customer", map[string]any{"customer_id": "C-2"})}},
			{Say: "Telling the customers.", Calls: []Call{
				tool("notifications.send_notification", map[string]any{"to": AnaEmail, "order_id": "ORD-1001",
					"message": "A strike at Rotterdam holds your order ORD-1001. We moved it to rail via Antwerp: it arrives one day late."}),
				tool("notifications.send_notification", map[string]any{"to": BenEmail, "order_id": "ORD-1002",
					"message": "A strike at Rotterdam holds your order ORD-1002. We moved it to rail via Antwerp: it arrives one day late."})}},
			{Say: "Billing the surcharge.", Calls: []Call{
				tool("billing.create_invoice", map[string]any{"customer_id": "C-1", "order_id": "ORD-1001", "amount": 190, "currency": "EUR", "description": "Rail via Antwerp (Rotterdam strike)"}),
				tool("billing.create_invoice", map[string]any{"customer_id": "C-2", "order_id": "ORD-1002", "amount": 190, "currency": "EUR", "description": "Rail via Antwerp (Rotterdam strike)"})}},
			{Say: "Done: ORD-1001 and ORD-1002 go by rail via Antwerp, one day late; both customers told; 2 × 190 EUR billed."},
		},
	}
}

// StoryScripts renders the story for a server with features f: corral's
// functions for agents and state where it has them; otherwise a handoff
// becomes the agent's final answer (the demo starts the next agent with
// it) and delegations and state writes are left out (the demo starts the
// chaser and the broker itself).
func StoryScripts(f Features) map[string][]Turn {
	out := map[string][]Turn{}
	for agent, turns := range story() {
		var rendered []Turn
		for _, t := range turns {
			var calls []Call
			final := ""
			for _, c := range t.Calls {
				switch {
				case strings.HasPrefix(c.Function, handoffFn):
					to := strings.TrimPrefix(c.Function, handoffFn)
					if f.Agents {
						calls = append(calls, Call{Function: "handoff_to_" + to, Args: c.Args})
					} else {
						input, _ := c.Args["input"].(string)
						final = strings.TrimSpace(t.Say + " " + input)
					}
				case strings.HasPrefix(c.Function, delegateFn):
					if f.Agents {
						calls = append(calls, Call{Function: "delegate_to_" + strings.TrimPrefix(c.Function, delegateFn), Args: c.Args})
					}
				case c.Function == stateFn:
					if f.State != "" {
						calls = append(calls, Call{Function: f.State, Args: c.Args})
					}
				default:
					calls = append(calls, Call{Function: ToolFunction(c.Function), Args: c.Args})
				}
			}
			switch {
			case final != "":
				rendered = append(rendered, Turn{Say: final})
			case len(calls) > 0 || len(t.Calls) == 0:
				rendered = append(rendered, Turn{Say: t.Say, Calls: calls})
			}
		}
		out[agent] = rendered
	}
	return out
}

// Handoffs lists, for each agent, the agent its story hands the work to.
func Handoffs() map[string]string {
	out := map[string]string{}
	for agent, turns := range story() {
		for _, t := range turns {
			for _, c := range t.Calls {
				if to, ok := strings.CutPrefix(c.Function, handoffFn); ok {
					out[agent] = to
				}
			}
		}
	}
	return out
}
