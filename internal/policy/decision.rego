# corral's own rules: read the four parts of the decision contract from
# data.corral.authz at once, with the defaults the contract gives parts
# that no rule defines. The engine checks their types.
package corral.decision

default deny := set()

deny := data.corral.authz.deny

default require_approval := set()

require_approval := data.corral.authz.require_approval

default allow := false

allow := data.corral.authz.allow

default obligations := {}

obligations := data.corral.authz.obligations

result := [deny, require_approval, allow, obligations]
