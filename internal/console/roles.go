package console

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/identity"
)

// Role is what a signed-in person may do in the console.
type Role string

// The roles, from least to most.
const (
	// Viewer reads everything the console shows and changes nothing.
	Viewer Role = "viewer"
	// Approver reads, and decides the approvals whose approver groups
	// hold them (the approvals API checks the groups).
	Approver Role = "approver"
	// Admin does everything: cancel tasks, kill agents, accept drift.
	Admin Role = "admin"
)

// Person is who a session belongs to.
type Person struct {
	Name   string   `json:"name"`
	Kind   string   `json:"kind"` // "admin-token", "human" or "user"
	Groups []string `json:"groups,omitempty"`
	Role   Role     `json:"role"`
}

// Admins checks admin tokens (identity.Store).
type Admins interface {
	VerifyAdmin(token string) bool
}

// Humans checks corral humans' keys (identity.Store).
type Humans interface {
	VerifyHuman(secret string) (identity.Human, bool)
}

// Users checks a trusted Issuer's tokens (identity.Issuers).
type Users interface {
	Verify(ctx context.Context, token string) (*identity.External, error)
}

// authenticator turns a credential into a Person with a role.
type authenticator struct {
	admins       Admins
	humans       Humans // nil: no humans
	users        Users  // nil: no trusted issuers
	adminGroups  []string
	viewerGroups []string
}

// authenticate returns who credential belongs to, and when it stops being
// valid (zero: it does not expire by itself). It is called at sign-in and
// again on every request, so a revoked key ends its sessions at once.
func (a *authenticator) authenticate(ctx context.Context, credential string) (Person, time.Time, bool) {
	switch {
	case credential == "":
		return Person{}, time.Time{}, false
	case a.admins.VerifyAdmin(credential):
		return Person{Name: "admin", Kind: "admin-token", Role: Admin}, time.Time{}, true
	case identity.IsHumanKey(credential):
		if a.humans == nil {
			return Person{}, time.Time{}, false
		}
		h, ok := a.humans.VerifyHuman(credential)
		if !ok {
			return Person{}, time.Time{}, false
		}
		return Person{Name: h.Name, Kind: "human", Groups: h.Groups, Role: a.role(h.Groups)}, time.Time{}, true
	case a.users != nil && strings.Count(credential, ".") == 2:
		u, err := a.users.Verify(ctx, credential)
		if err != nil {
			return Person{}, time.Time{}, false
		}
		var exp time.Time
		if u.Expiry > 0 {
			exp = time.Unix(u.Expiry, 0)
		}
		return Person{Name: u.Subject + " (" + u.IssuerName + ")", Kind: "user", Groups: u.Groups, Role: a.role(u.Groups)}, exp, true
	}
	return Person{}, time.Time{}, false
}

// role maps a person's groups to a role: an admin group makes an admin, a
// viewer group a viewer (even when another group would let them decide),
// anyone else an approver.
func (a *authenticator) role(groups []string) Role {
	in := func(set []string) bool {
		return slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(set, g) })
	}
	switch {
	case in(a.adminGroups):
		return Admin
	case in(a.viewerGroups):
		return Viewer
	}
	return Approver
}
