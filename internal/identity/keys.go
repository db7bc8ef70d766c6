package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// agentKeyPrefix makes corral agent keys recognisable to secret scanners.
const agentKeyPrefix = "corral_ak_"

// IsAgentKey reports whether a credential has the form of an agent key
// (as opposed to a token), without looking it up.
func IsAgentKey(credential string) bool { return strings.HasPrefix(credential, agentKeyPrefix) }

// ErrKeyNotFound is returned (wrapped) for a key id that names no key.
var ErrKeyNotFound = errors.New("no such key")

// Key describes an agent API key. The key itself is shown once, when
// created; afterwards its ID names it.
type Key struct {
	// ID is the first 12 hex digits of the key's SHA-256: enough to name it,
	// useless for recovering it.
	ID    string `json:"id"`
	Agent string `json:"agent"`
	// AgentUID is the metadata.uid of the Agent resource the key was made
	// for: the key serves that incarnation of the agent only, never an
	// agent created later under the same name. Empty for keys made before
	// corral recorded it, which serve an Agent without a uid.
	AgentUID string    `json:"agent_uid,omitempty"`
	Created  time.Time `json:"created"`
}

const keyIDLength = 12

// CreateKey creates an API key for agent, whose Agent resource has
// metadata.uid agentUID, and returns it with its description. The caller
// must show it to the user now: only its hash is kept.
func (s *Store) CreateKey(ctx context.Context, agent, agentUID string) (string, Key, error) {
	secret := newSecret(agentKeyPrefix)
	r := record{Kind: kindAgent, Agent: agent, AgentUID: agentUID, Created: time.Now().UTC()}
	value, err := json.Marshal(r)
	if err != nil {
		return "", Key{}, err
	}
	k := bucketKey(kindAgent, secret)
	if _, err := s.kv.Create(ctx, k, value); err != nil {
		return "", Key{}, fmt.Errorf("identity: store key for %s: %w", agent, err)
	}
	s.mu.Lock()
	s.records[k] = r
	s.mu.Unlock()
	return secret, describe(k, r), nil
}

// VerifyKey returns the key that secret is, if it is a live agent key.
func (s *Store) VerifyKey(secret string) (Key, bool) {
	if !strings.HasPrefix(secret, agentKeyPrefix) {
		return Key{}, false
	}
	r, ok := s.lookup(kindAgent, secret)
	if !ok {
		return Key{}, false
	}
	return describe(bucketKey(kindAgent, secret), r), true
}

// Keys lists the live keys of agent, or of every agent when agent is "",
// oldest first.
func (s *Store) Keys(agent string) []Key {
	s.mu.RLock()
	var out []Key
	for k, r := range s.records {
		if r.Kind == kindAgent && (agent == "" || r.Agent == agent) {
			out = append(out, describe(k, r))
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Key) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// RevokeKey deletes the key with the given ID. Every replica stops accepting
// it as soon as its watch sees the deletion.
func (s *Store) RevokeKey(ctx context.Context, id string) (Key, error) {
	prefix := kindAgent + "." + id
	var (
		found string
		key   Key
	)
	s.mu.RLock()
	for k, r := range s.records {
		if len(id) == keyIDLength && strings.HasPrefix(k, prefix) {
			found, key = k, describe(k, r)
			break
		}
	}
	s.mu.RUnlock()
	if found == "" {
		return Key{}, fmt.Errorf("key %s: %w", id, ErrKeyNotFound)
	}
	if err := s.kv.Delete(ctx, found); err != nil {
		return Key{}, fmt.Errorf("identity: revoke key %s: %w", id, err)
	}
	s.mu.Lock()
	delete(s.records, found)
	s.mu.Unlock()
	return key, nil
}

// RevokeAgent revokes every key of agent: its Agent resource was deleted.
// Keys made for an earlier incarnation are refused anyway (their AgentUID
// no longer matches); this removes them from the list and the bucket.
func (s *Store) RevokeAgent(ctx context.Context, agent string) ([]Key, error) {
	var revoked []Key
	var errs []error
	for _, k := range s.Keys(agent) {
		if _, err := s.RevokeKey(ctx, k.ID); err != nil && !errors.Is(err, ErrKeyNotFound) {
			errs = append(errs, err)
			continue
		}
		revoked = append(revoked, k)
	}
	return revoked, errors.Join(errs...)
}

func describe(bucketKey string, r record) Key {
	id := strings.TrimPrefix(bucketKey, kindAgent+".")
	return Key{ID: id[:keyIDLength], Agent: r.Agent, AgentUID: r.AgentUID, Created: r.Created}
}
