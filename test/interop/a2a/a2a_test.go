// Package a2a_test checks corral's A2A v1.0 edge against the official
// JavaScript SDK, @a2a-js/sdk: its client drives hosted agents of corral's
// (client.mjs); its server is a remote agent corral calls (server.mjs).
package a2a_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/test/nodetest"
)

// clientTimeout catches a hang on a shared two-core machine, not a slow run.
const clientTimeout = 2 * time.Minute

const answer = "Rotterdam: 3 orders this week, 2 of them late."

const agents = `apiVersion: corral.dev/v1
kind: Model
metadata: {name: quick}
spec:
  provider: scripted
  script:
    - content: "` + answer + `"
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: careful}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: request_input, arguments: {question: "Refund 400 EUR to Ada?"}}]
    - content: "Refunded, as you confirmed."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec: {description: "Finds the orders a port closure hits.", model: quick, models: [quick]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: refunds}
spec: {description: "Refunds orders, after asking.", model: careful, models: [careful]}
`

// TestJSClientDrivesHostedAgents: the SDK's client reads a hosted agent's
// card, sends (blocking), streams, gets, lists, answers an input-required
// task and cancels one, all over corral's JSON-RPC binding.
func TestJSClientDrivesHostedAgents(t *testing.T) {
	node := nodetest.Program(t, "node")
	nodetest.Install(t, "@a2a-js/sdk")
	srv := apptest.Start(t)
	srv.Apply(t, agents)
	out := runNode(t, node, "client.mjs",
		"CORRAL_URL="+srv.URL, "CORRAL_KEY="+srv.Key(t, "impact"), "CORRAL_AGENT=impact", "CORRAL_ANSWER="+answer,
		"CORRAL_ASKER=refunds", "CORRAL_ASKER_KEY="+srv.Key(t, "refunds"))
	if !bytes.Contains(out, []byte("all checks passed")) {
		t.Fatalf("client.mjs did not finish:\n%s", out)
	}
}

func runNode(t *testing.T, node, script string, env ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
	return out
}
