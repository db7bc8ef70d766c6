# Rules for agents that move money through the banking API (the ToolSource
# "banking": banking.send_money, banking.get_balance,
# banking.list_transactions, ...). They add to the default bundle: an agent
# still needs the tools in its spec.tools to call them at all.
#
# Data (data.json): payments.known_recipients (IBANs without spaces), payments.approval_threshold
# (per currency), payments.approvers, payments.mode_label.
package corral.authz

# The action is a transfer: banking.send_money {to_iban, amount, currency, reference}.
is_transfer if {
	input.action.kind == "tool"
	input.action.target == "banking.send_money"
}

transfer := input.action.arguments if is_transfer

# IBANs compare in their electronic form: no spaces, capitals. The known
# recipients in data.json are written that way.
normal_iban(iban) := upper(concat("", split(iban, " ")))

# Each check is a rule of its own, so that `not` also holds when the
# argument is missing or of the wrong type (the rule is then undefined).
valid_iban if corral.iban.valid(transfer.to_iban)

known_currency if data.payments.approval_threshold[transfer.currency]

positive_amount if {
	is_number(transfer.amount)
	transfer.amount > 0
}

# A transfer to something that is not an IBAN is refused outright.
deny contains "the recipient is not a valid IBAN" if {
	is_transfer
	not valid_iban
}

# Only currencies with an approval threshold can be sent.
deny contains "the currency is not one this policy knows" if {
	is_transfer
	not known_currency
}

deny contains "the amount must be a positive number" if {
	is_transfer
	not positive_amount
}

# A new recipient needs a human to confirm it. Approval rules check allow:
# the contract asks for approval whenever require_approval holds, and an
# agent that may not call banking.send_money at all must stay denied.
require_approval contains "the recipient is not a known recipient" if {
	allow
	valid_iban
	not normal_iban(transfer.to_iban) in data.payments.known_recipients
}

# So does a large amount. The reason names the threshold from data, never
# the amount the agent asked for.
require_approval contains sprintf("transfers over %v %s need approval", [limit, transfer.currency]) if {
	allow
	positive_amount
	limit := data.payments.approval_threshold[transfer.currency] # a known currency: data, not the agent's text
	transfer.amount > limit
}

# An agent labelled payments.corral.dev/mode: read-only may only call tools
# that read: HTTP GET operations. A tool without an HTTP method (an MCP
# tool) is refused too, since nothing says it only reads.
deny contains "a read-only agent may only call GET operations" if {
	input.action.kind == "tool"
	input.agent.labels[data.payments.mode_label] == "read-only"
	not input.tool.method == "GET"
}

# Who may approve a transfer; the approval stage reads it.
obligations.approvers := data.payments.approvers if is_transfer
