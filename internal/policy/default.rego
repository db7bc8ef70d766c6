# The default bundle: what corral allows when no Policy says more.
# Policies add rules to this same package; a deny or require_approval they
# add applies on top of these rules.
package corral.authz

# An agent may call the tools its spec.tools globs list...
allow if {
	input.action.kind == "tool"
	some pattern in input.agent.tools
	corral.glob.match(pattern, input.action.target)
}

# ...and the models its spec.models globs list.
allow if {
	input.action.kind == "model"
	some pattern in input.agent.models
	corral.glob.match(pattern, input.action.target)
}

# Agent-to-agent calls (kind "agent") are allowed by no rule yet: the A2A
# work adds them.

# A destructive tool the agent may call waits for a human. (The contract
# asks for approval whenever require_approval holds, allowed or not: the
# rule checks allow, so that a tool the agent may not call stays denied.)
require_approval contains sprintf("%s is destructive: a human must approve it", [input.tool.name]) if {
	input.action.kind == "tool"
	input.tool.annotations.destructive
	allow
}
