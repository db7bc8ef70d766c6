// Package approval keeps the actions that policy parked for a human's
// decision: each approval is bound to exactly one action (agent, target,
// arguments digest, task, Idempotency-Key), decided by the people its
// policy names (groups, quorum, four eyes), used at most once, and expired
// by a sweep over the mirror that every replica runs, so nothing depends on
// a timer a restart would lose. Approvals live in a JetStream key-value
// bucket that every replica mirrors; writes are guarded by revision.
package approval

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// State is where an approval is in its life.
type State string

// The states. Pending is the only one a decision changes; Approved is the
// only one an execution claims.
const (
	Pending  State = "pending"
	Approved State = "approved"
	Denied   State = "denied"
	Expired  State = "expired"
	Executed State = "executed"
	Canceled State = "canceled"
)

// Valid reports whether s is one of the states.
func (s State) Valid() bool {
	switch s {
	case Pending, Approved, Denied, Expired, Executed, Canceled:
		return true
	}
	return false
}

// Errors callers branch on; the store wraps them with the approval's id.
var (
	ErrNotFound       = errors.New("no such approval")
	ErrPending        = errors.New("awaiting approval")
	ErrDenied         = errors.New("denied")
	ErrExpired        = errors.New("expired")
	ErrUsed           = errors.New("already executed")
	ErrClosed         = errors.New("no longer pending")
	ErrNotApprover    = errors.New("not an approver")
	ErrOwnAction      = errors.New("four eyes: one cannot approve an action taken on one's own behalf")
	ErrAlreadyDecided = errors.New("already decided by this person")
)

// Action is the parked call, exactly: what executes after an approval is
// what Binding names.
type Action struct {
	Agent           string `json:"agent"`
	AgentUID        string `json:"agent_uid,omitempty"`
	Principal       string `json:"principal,omitempty"`
	PrincipalIssuer string `json:"principal_issuer,omitempty"`
	Task            string `json:"task,omitempty"`
	Step            string `json:"step,omitempty"`
	// Kind is "tool" or "model"; Target the tool or model.
	Kind   string `json:"kind"`
	Target string `json:"target"`
	Source string `json:"source,omitempty"`
	// Revision is the revision of the tool's source when the call was
	// parked, for the approver's information.
	Revision string `json:"revision,omitempty"`
	// ArgsDigest is "sha256:<hex>" of the canonical arguments: the binding.
	ArgsDigest string `json:"args_digest"`
	// Arguments are shown to approvers with what the built-in detectors
	// find masked; they bind nothing (ArgsDigest does).
	Arguments      json.RawMessage `json:"arguments,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	// Owners are the agent's owners when the call was parked (its
	// spec.owners): they cannot approve it.
	Owners []string `json:"owners,omitempty"`
}

// Binding is the digest of everything that makes two calls the same call:
// agent and its incarnation, principal, task, kind, target, arguments
// digest and Idempotency-Key. Any other byte of arguments is another call.
func (a Action) Binding() string {
	h := sha256.New()
	for _, s := range []string{a.Agent, a.AgentUID, a.Principal, a.PrincipalIssuer, a.Task, a.Kind, a.Target, a.ArgsDigest, a.IdempotencyKey} {
		// Length-prefixed, so that no two field lists write the same bytes.
		h.Write([]byte(strconv.Itoa(len(s)) + ":" + s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Verdict is one person's decision.
type Verdict string

// The verdicts.
const (
	Approve Verdict = "approve"
	Deny    Verdict = "deny"
)

// Decision is one person's verdict on an approval.
type Decision struct {
	// By names the person: "human:<name>" or "user:<issuer>#<subject>".
	By      string    `json:"by"`
	Name    string    `json:"name"`
	Verdict Verdict   `json:"decision"`
	Comment string    `json:"comment,omitempty"`
	Via     string    `json:"via,omitempty"` // "api", "slack"
	At      time.Time `json:"at"`
}

// Execution is the outcome of the approved call, once it ran.
type Execution struct {
	At        time.Time `json:"at"`
	RequestID string    `json:"request_id,omitempty"`
	// AuditID names the audit record of the call; empty while it runs (or
	// when corral stopped while it ran).
	AuditID string `json:"audit_id,omitempty"`
	// Status is "ok", "error" (the tool reported failure) or "failed"
	// (Code says why); empty while it runs.
	Status string `json:"status,omitempty"`
	Code   string `json:"code,omitempty"`
	// Result is the call's answer, when it is small enough to keep.
	Result json.RawMessage `json:"result,omitempty"`
}

// MaxResult bounds the answer an approval keeps for GET /v1/approvals/{id}.
const MaxResult = 64 << 10

// Approval is one parked action and everything decided about it.
type Approval struct {
	ID     string `json:"id"`
	State  State  `json:"state"`
	Action Action `json:"action"`
	// Requester is who asked: "agent:<name>".
	Requester      string   `json:"requester"`
	Reasons        []string `json:"reasons"`
	PolicyRevision string   `json:"policy_revision,omitempty"`
	// Approvers are the groups whose members may decide; empty: any
	// approver (a corral human or a user of a trusted Issuer).
	Approvers []string   `json:"approvers,omitempty"`
	Quorum    int        `json:"quorum"`
	Created   time.Time  `json:"created"`
	Expires   time.Time  `json:"expires"`
	Decisions []Decision `json:"decisions,omitempty"`
	// Ended is when it left pending: decided or expired.
	Ended     *time.Time `json:"ended,omitempty"`
	Execution *Execution `json:"execution,omitempty"`
	// Revision is the bucket revision this copy was read at.
	Revision uint64 `json:"revision"`
}

// Person is someone who may decide: a corral human, or a user of a trusted
// Issuer. Agents and the admin token are never persons.
type Person struct {
	// ID is "human:<name>" or "user:<issuer>#<subject>".
	ID     string
	Name   string
	Groups []string
	// Subject and Issuer are set for a user of a trusted Issuer: who they
	// are as a principal.
	Subject, Issuer string
}

// Human is the Person a corral human is.
func Human(name string, groups []string) Person {
	return Person{ID: "human:" + name, Name: name, Groups: groups}
}

// User is the Person a trusted Issuer's user is.
func User(issuer, subject string, groups []string) Person {
	return Person{ID: "user:" + issuer + "#" + subject, Name: subject, Groups: groups, Subject: subject, Issuer: issuer}
}

// approvals counts the approving decisions.
func (a *Approval) approvals() int {
	n := 0
	for _, d := range a.Decisions {
		if d.Verdict == Approve {
			n++
		}
	}
	return n
}

// due reports whether a pending approval is past its expiry at now.
func (a *Approval) due(now time.Time) bool {
	return a.State == Pending && !now.Before(a.Expires)
}

// Eligible says whether p may decide a now: it is pending and not past its
// expiry, p is not the action's principal, has not decided it already, and
// belongs to one of its approver groups (any group when none is named).
func (a *Approval) Eligible(p Person, now time.Time) error {
	switch {
	case a.due(now) || a.State == Expired:
		return ErrExpired
	case a.State != Pending:
		return fmt.Errorf("%w: it is %s", ErrClosed, a.State)
	case p.ID == "":
		return ErrNotApprover
	case a.Action.Principal != "" && p.Subject == a.Action.Principal && p.Issuer == a.Action.PrincipalIssuer:
		return ErrOwnAction
	case a.Action.Principal != "" && a.Action.PrincipalIssuer == "" && p.Name == a.Action.Principal:
		return ErrOwnAction
	case slices.ContainsFunc(a.Action.Owners, func(o string) bool { return o == p.Name || (p.Subject != "" && o == p.Subject) }):
		return ErrOwnAction
	case slices.ContainsFunc(a.Decisions, func(d Decision) bool { return d.By == p.ID }):
		return ErrAlreadyDecided
	case len(a.Approvers) > 0 && !slices.ContainsFunc(p.Groups, func(g string) bool { return slices.Contains(a.Approvers, g) }):
		return fmt.Errorf("%w: deciding needs one of the groups %v", ErrNotApprover, a.Approvers)
	}
	return nil
}

// decide records p's verdict, which Eligible has allowed: one deny denies;
// Quorum distinct approvals approve.
func (a *Approval) decide(p Person, v Verdict, comment, via string, now time.Time) {
	a.Decisions = append(a.Decisions, Decision{By: p.ID, Name: p.Name, Verdict: v, Comment: comment, Via: via, At: now.UTC()})
	switch {
	case v == Deny:
		a.State = Denied
	case a.approvals() >= max(a.Quorum, 1):
		a.State = Approved
	default:
		return
	}
	t := now.UTC()
	a.Ended = &t
}
