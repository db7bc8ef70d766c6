package app_test

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// TestAgentsAcrossReplicas: two replicas on one substrate. Delegations
// complete whichever replica runs the parent and the child (the child's
// end wakes the parent from the replica that records it), and a deadlock
// whose two waits reach different replicas is broken once: the replicas'
// corral_deadlocks_total add up to one.
func TestAgentsAcrossReplicas(t *testing.T) {
	natsURL := bustest.ExternalServer(t)
	dirA := t.TempDir()
	a := apptest.StartWith(t, app.Config{NATSURL: natsURL, DataDir: dirA, WorkerID: "a"})
	c := apptest.StartWith(t, app.Config{NATSURL: natsURL, WorkerID: "c", SecretsKey: filepath.Join(dirA, "secrets.key")})
	a.Apply(t, scriptedAgent("impact", "  agents: [negotiator]\n",
		`toolCalls: [{name: delegate_to_negotiator, arguments: {input: "Friday?"}}]`, `content: "settled"`)+
		scriptedAgent("negotiator", "", `content: "Friday it is"`)+`---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: buyer}
spec: {agents: [seller]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: seller}
spec: {}
`)
	var ids []string
	for range 6 {
		ids = append(ids, createTask(t, a, a.Token, "impact", "order 42", nil).ID)
	}
	workers := map[string]bool{}
	for _, id := range ids {
		done := waitTask(t, a, id)
		if done.State != orchestrator.Completed || string(done.Result) != `"settled"` {
			t.Errorf("parent %s = %s %s %s", id, done.State, done.Reason, done.Detail)
		}
		workers[done.Worker] = true
		for _, k := range childrenOf(t, a, id) {
			workers[k.Worker] = true
		}
	}
	t.Logf("parents and children ran on workers %v", workers)

	buyerKey, sellerKey := a.Key(t, "buyer"), a.Key(t, "seller")
	root := createTask(t, a, a.Token, "buyer", "buy", nil)
	_, buyerTok, _ := taskToken(t, a, "buyer", buyerKey, root.ID)
	child := createTask(t, a, buyerTok, "seller", "sell", nil)
	_, sellerTok, _ := taskToken(t, c, "seller", sellerKey, child.ID)
	got := make(chan orchestrator.Task, 2)
	wait := func(s *apptest.Server, token, id string) {
		_, body := s.Call(t, token, "GET", "/v1/tasks/"+id+"?wait=20s", nil, nil)
		var task orchestrator.Task
		_ = json.Unmarshal(body, &task)
		got <- task
	}
	go wait(a, buyerTok, child.ID)
	go wait(c, sellerTok, root.ID)
	// Both waits end: the buyer's with the seller's task failed, the
	// seller's because its own task ended.
	answers := map[string]orchestrator.Task{}
	for range 2 {
		task := <-got
		answers[task.ID] = task
	}
	if ended := answers[child.ID]; ended.State != orchestrator.Failed || ended.Reason != orchestrator.ReasonDeadlock {
		t.Fatalf("the younger task = %s %s %s, want failed with deadlock", ended.State, ended.Reason, ended.Detail)
	}
	if older := answers[root.ID]; older.State.Final() {
		t.Errorf("the older task ended too: %s %s", older.State, older.Reason)
	}
	counted := 0
	for _, s := range []*apptest.Server{a, c} {
		_, body := s.Call(t, s.Token, "GET", "/metrics", nil, nil)
		if m := regexp.MustCompile(`(?m)^corral_deadlocks_total (\d+)`).FindSubmatch(body); m != nil {
			n, _ := strconv.Atoi(string(m[1]))
			counted += n
			t.Logf("replica counted %d", n)
		}
	}
	if counted != 1 {
		t.Errorf("the replicas counted %d deadlocks, want 1:\n%s\n%s", counted, taskEvents(t, a, child.ID), taskEvents(t, a, root.ID))
	}
	if n := strings.Count(taskEvents(t, a, child.ID), `"reason":"deadlock"`); n != 1 {
		t.Errorf("the deadlock ended the task %d times in its journal, want once", n)
	}
}
