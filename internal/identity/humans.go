package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/config"
)

// humanKeyPrefix makes corral human credentials recognisable to secret
// scanners, and tells them from agent keys at a glance.
const humanKeyPrefix = "corral_hk_"

// kindHuman is the kind of a human's credential record.
const kindHuman = "human"

// IsHumanKey reports whether a credential has the form of a human's key.
func IsHumanKey(credential string) bool { return strings.HasPrefix(credential, humanKeyPrefix) }

// Errors of the humans' functions, wrapped with the name concerned.
var (
	ErrHumanNotFound = errors.New("no such human")
	ErrHumanExists   = errors.New("a human of that name exists")
	ErrInvalidHuman  = errors.New("invalid human")
)

// Human is a person corral knows: an approver. The credential is shown
// once, when created; only its hash is kept.
type Human struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
	// SlackUser is the Slack user id (U123...) whose button presses count
	// as this human's decisions.
	SlackUser string    `json:"slack_user,omitempty"`
	Created   time.Time `json:"created"`
}

var (
	groupPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$`)
	slackPattern = regexp.MustCompile(`^[UW][A-Z0-9]{2,31}$`)
)

const maxHumanGroups = 32

// Check validates h's fields; the error names the bad one.
func (h Human) Check() error {
	if !config.ValidName(h.Name) {
		return fmt.Errorf("%w: name %q: lowercase letters, digits and '-', at most 63", ErrInvalidHuman, clipName(h.Name))
	}
	if len(h.Groups) > maxHumanGroups {
		return fmt.Errorf("%w: groups: %d; at most %d", ErrInvalidHuman, len(h.Groups), maxHumanGroups)
	}
	for _, g := range h.Groups {
		if !groupPattern.MatchString(g) {
			return fmt.Errorf("%w: groups: %q is not a group name (letters, digits and _.:@/-, at most 128)", ErrInvalidHuman, clipName(g))
		}
	}
	if h.SlackUser != "" && !slackPattern.MatchString(h.SlackUser) {
		return fmt.Errorf("%w: slack_user %q: want a Slack user id such as U0123ABCD", ErrInvalidHuman, clipName(h.SlackUser))
	}
	return nil
}

func clipName(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// CreateHuman stores a new human and returns their credential, which the
// caller must show now: only its hash is kept.
func (s *Store) CreateHuman(ctx context.Context, h Human) (string, Human, error) {
	if err := h.Check(); err != nil {
		return "", Human{}, err
	}
	if _, ok := s.human(h.Name); ok {
		return "", Human{}, fmt.Errorf("human %s: %w", h.Name, ErrHumanExists)
	}
	h.Created = time.Now().UTC()
	h.Groups = slices.Compact(slices.Sorted(slices.Values(h.Groups)))
	if h.Groups == nil {
		h.Groups = []string{}
	}
	// The name is claimed first, with a create that fails if it exists, so
	// that two admins creating the same human at once get one each way.
	nameKey := kindHuman + "name." + h.Name
	if _, err := s.kv.Create(ctx, nameKey, []byte(h.Name)); err != nil {
		return "", Human{}, fmt.Errorf("human %s: %w", h.Name, ErrHumanExists)
	}
	secret := newSecret(humanKeyPrefix)
	r := record{Kind: kindHuman, Name: h.Name, Groups: h.Groups, SlackUser: h.SlackUser, Created: h.Created}
	value, err := json.Marshal(r)
	if err != nil {
		return "", Human{}, err
	}
	k := bucketKey(kindHuman, secret)
	if _, err := s.kv.Create(ctx, k, value); err != nil {
		_ = s.kv.Delete(context.WithoutCancel(ctx), nameKey)
		return "", Human{}, fmt.Errorf("identity: store human %s: %w", h.Name, err)
	}
	s.mu.Lock()
	s.records[k] = r
	s.mu.Unlock()
	return secret, h, nil
}

// VerifyHuman returns the human whose credential secret is.
func (s *Store) VerifyHuman(secret string) (Human, bool) {
	if !IsHumanKey(secret) {
		return Human{}, false
	}
	r, ok := s.lookup(kindHuman, secret)
	if !ok {
		return Human{}, false
	}
	return humanOf(r), true
}

// Humans lists the humans by name.
func (s *Store) Humans() []Human {
	s.mu.RLock()
	var out []Human
	for _, r := range s.records {
		if r.Kind == kindHuman {
			out = append(out, humanOf(r))
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Human) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// HumanBySlack returns the human who declared Slack user id u.
func (s *Store) HumanBySlack(u string) (Human, bool) {
	if u == "" {
		return Human{}, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, r := range s.records {
		if r.Kind == kindHuman && r.SlackUser == u {
			return humanOf(r), true
		}
	}
	return Human{}, false
}

// human returns the live human called name.
func (s *Store) human(name string) (Human, bool) {
	for _, h := range s.Humans() {
		if h.Name == name {
			return h, true
		}
	}
	return Human{}, false
}

// RevokeHuman deletes the human called name and their credential. Every
// replica stops accepting it as soon as its watch sees the deletion.
func (s *Store) RevokeHuman(ctx context.Context, name string) (Human, error) {
	var found string
	var h Human
	s.mu.RLock()
	for k, r := range s.records {
		if r.Kind == kindHuman && r.Name == name {
			found, h = k, humanOf(r)
			break
		}
	}
	s.mu.RUnlock()
	if found == "" {
		return Human{}, fmt.Errorf("human %.64q: %w", name, ErrHumanNotFound)
	}
	if err := s.kv.Delete(ctx, found); err != nil {
		return Human{}, fmt.Errorf("identity: revoke human %s: %w", name, err)
	}
	s.mu.Lock()
	delete(s.records, found)
	s.mu.Unlock()
	if err := s.kv.Delete(ctx, kindHuman+"name."+name); err != nil {
		return h, fmt.Errorf("identity: free the name of human %s: %w", name, err)
	}
	return h, nil
}

func humanOf(r record) Human {
	return Human{Name: r.Name, Groups: r.Groups, SlackUser: r.SlackUser, Created: r.Created}
}
