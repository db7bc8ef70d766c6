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

# ...and the agents its spec.agents globs list (delegate, hand off:
# docs/agents.md).
allow if {
	input.action.kind == "agent"
	some pattern in input.agent.agents
	corral.glob.match(pattern, input.action.target)
}

# A destructive tool the agent may call waits for a human. (The contract
# asks for approval whenever require_approval holds, allowed or not: the
# rule checks allow, so that a tool the agent may not call stays denied.)
require_approval contains sprintf("%s is destructive: a human must approve it", [input.tool.name]) if {
	input.action.kind == "tool"
	input.tool.annotations.destructive
	allow
}

# An MCP server's annotations are claims. A source that follows them live
# (spec.mcp.adoptChanges) can turn a destructive tool read-only at any
# moment, so a tool that is not destructive only on such a claim waits for
# a human too. (Pinned claims changed are held back as drift for review; an
# override in the ToolSource is the operator's word.)
require_approval contains sprintf("%s is not destructive only by its upstream's live claim: a human must approve it", [input.tool.name]) if {
	input.action.kind == "tool"
	not input.tool.annotations.destructive
	input.tool.annotations_source.destructive == "upstream"
	allow
}
