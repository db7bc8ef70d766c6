# Tests of payments.rego together with corral's default bundle:
#   go run ./cmd/corral policy test examples/policies/payments
package corral.authz_test

import data.corral.authz

# --- inputs -----------------------------------------------------------------

treasurer := {"name": "treasurer", "labels": {}, "tools": ["banking.*"], "models": []}

auditor := {
	"name": "auditor",
	"labels": {"payments.corral.dev/mode": "read-only"},
	"tools": ["banking.*"],
	"models": [],
}

send_money_tool := {
	"name": "banking.send_money", "source": "banking", "method": "POST", "path": "/transfers",
	"annotations": {"readOnly": false, "destructive": false, "idempotent": false},
}

get_balance_tool := {
	"name": "banking.get_balance", "source": "banking", "method": "GET", "path": "/accounts/{id}/balance",
	"annotations": {"readOnly": true, "destructive": false, "idempotent": true},
}

close_account_tool := {
	"name": "banking.close_account", "source": "banking", "method": "DELETE", "path": "/accounts/{id}",
	"annotations": {"readOnly": false, "destructive": true, "idempotent": true},
}

call(agent, tool, args) := {
	"action": {"kind": "tool", "target": tool.name, "arguments": args},
	"agent": agent,
	"tool": tool,
	"time": "2026-03-02T10:00:00Z",
}

transfer(args) := call(treasurer, send_money_tool, object.union(
	{"to_iban": "DE89 3704 0044 0532 0130 00", "amount": 120, "currency": "EUR", "reference": "invoice 7"},
	args,
))

# effect is the decision's effect, as the engine applies the contract.
effect := "deny" if {
	count(authz.deny) > 0
} else := "approval" if {
	count(authz.require_approval) > 0
} else := "allow" if {
	authz.allow
} else := "deny"

# --- transfers --------------------------------------------------------------

test_small_transfer_to_known_recipient_is_allowed if {
	effect == "allow" with input as transfer({})
}

test_known_recipient_matches_without_spaces_and_in_lowercase if {
	effect == "allow" with input as transfer({"to_iban": "de89370400440532013000"})
}

test_unknown_recipient_needs_approval if {
	authz.require_approval == {"the recipient is not a known recipient"} with input as transfer({"to_iban": "NL91 ABNA 0417 1643 00"})
	effect == "approval" with input as transfer({"to_iban": "NL91 ABNA 0417 1643 00"})
}

test_amount_at_threshold_is_allowed if {
	effect == "allow" with input as transfer({"amount": 1000})
}

test_amount_over_threshold_needs_approval if {
	authz.require_approval == {"transfers over 1000 EUR need approval"} with input as transfer({"amount": 1000.01})
}

test_threshold_follows_the_currency if {
	effect == "allow" with input as transfer({"amount": 1050, "currency": "USD"})
	effect == "approval" with input as transfer({"amount": 900, "currency": "GBP"})
}

test_unknown_recipient_and_large_amount_give_both_reasons if {
	count(authz.require_approval) == 2 with input as transfer({"to_iban": "CH93 0076 2011 6238 5295 7", "amount": 5000})
}

test_invalid_iban_is_denied if {
	authz.deny == {"the recipient is not a valid IBAN"} with input as transfer({"to_iban": "DE89 3704 0044 0532 0130 01"})
}

test_missing_or_malformed_iban_is_denied if {
	effect == "deny" with input as transfer({"to_iban": ""})
	effect == "deny" with input as transfer({"to_iban": 42})
	effect == "deny" with input as call(treasurer, send_money_tool, {"amount": 10, "currency": "EUR"})
	effect == "deny" with input as call(treasurer, send_money_tool, null)
}

test_deny_wins_over_approval if {
	# invalid IBAN and a large amount: deny, with only deny's reasons
	effect == "deny" with input as transfer({"to_iban": "XX00 1234", "amount": 99999})
}

test_unknown_currency_is_denied if {
	authz.deny == {"the currency is not one this policy knows"} with input as transfer({"currency": "CHF"})
}

test_amount_must_be_a_positive_number if {
	effect == "deny" with input as transfer({"amount": 0})
	effect == "deny" with input as transfer({"amount": -5})
	effect == "deny" with input as transfer({"amount": "1000"})
}

test_reasons_never_quote_arguments if {
	reasons := authz.deny | authz.require_approval with input as transfer({"to_iban": "NL91 ABNA 0417 1643 00", "amount": 4242.42, "reference": "secret-ref"})
	every r in reasons {
		not contains(r, "4242")
		not contains(r, "NL91")
		not contains(r, "secret-ref")
	}
}

test_transfer_carries_approvers if {
	authz.obligations == {"approvers": ["payments-oncall"]} with input as transfer({})
}

test_other_tools_carry_no_obligations if {
	not authz.obligations.approvers with input as call(treasurer, get_balance_tool, {"id": "acc-1"})
}

# --- read-only agents -------------------------------------------------------

test_read_only_agent_may_read if {
	effect == "allow" with input as call(auditor, get_balance_tool, {"id": "acc-1"})
}

test_read_only_agent_may_not_transfer if {
	authz.deny["a read-only agent may only call GET operations"] with input as call(auditor, send_money_tool, {"to_iban": "DE89 3704 0044 0532 0130 00", "amount": 1, "currency": "EUR"})
}

test_read_only_agent_may_not_call_tools_without_method if {
	mcp_tool := object.remove(get_balance_tool, ["method", "path"])
	effect == "deny" with input as call(auditor, mcp_tool, {})
}

test_other_labels_do_not_restrict if {
	agent := object.union(treasurer, {"labels": {"payments.corral.dev/mode": "full"}})
	effect == "allow" with input as call(agent, send_money_tool, {"to_iban": "DE89 3704 0044 0532 0130 00", "amount": 1, "currency": "EUR"})
}

# --- the default bundle still applies --------------------------------------

test_unlisted_transfer_is_denied_not_sent_for_approval if {
	agent := object.union(treasurer, {"tools": ["banking.get_*"]})
	effect == "deny" with input as call(agent, send_money_tool, {"to_iban": "NL91 ABNA 0417 1643 00", "amount": 5000, "currency": "EUR"})
}

test_tools_outside_spec_tools_are_not_allowed if {
	agent := object.union(treasurer, {"tools": ["banking.get_*"]})
	authz.deny == set() with input as call(agent, send_money_tool, {"to_iban": "DE89 3704 0044 0532 0130 00", "amount": 1, "currency": "EUR"})
	effect == "deny" with input as call(agent, send_money_tool, {"to_iban": "DE89 3704 0044 0532 0130 00", "amount": 1, "currency": "EUR"})
}

test_destructive_tools_need_approval if {
	authz.require_approval == {"banking.close_account is destructive: a human must approve it"} with input as call(treasurer, close_account_tool, {"id": "acc-1"})
}

test_rules_ignore_other_kinds if {
	inp := {
		"action": {"kind": "model", "target": "gpt-4o", "arguments": {}},
		"agent": object.union(treasurer, {"models": ["gpt-*"]}),
		"model": {"name": "gpt-4o", "provider": "openai", "region": "eu"},
		"time": "2026-03-02T10:00:00Z",
	}
	effect == "allow" with input as inp
}
