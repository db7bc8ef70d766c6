// Package policy decides, on every action an agent attempts, whether it is
// allowed, denied or needs a human's approval, by evaluating Rego modules
// (package corral.authz) with OPA embedded: the decision contract, the
// input, corral's Rego functions, the default bundle, the Store that keeps
// the live engine built from Policy resources, and a test runner like
// `opa test`. docs/policy.md is the user's side of it.
package policy
