package trigger

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
)

// BenchmarkWebhookStart measures a signed webhook event, from the request
// to its answer: the signature checked, the task stored (embedded
// JetStream in a temporary directory), 202.
func BenchmarkWebhookStart(b *testing.B) {
	e := newEnv(b)
	e.apply("gh", githubTrigger("monitor"))
	secret := secrets["HOOK_SECRET"]
	client := &http.Client{}
	i := 0
	for b.Loop() {
		i++
		body := fmt.Appendf(nil, `{"port":"Rotterdam","n":%d}`, i)
		req, _ := http.NewRequest("POST", e.hooks.URL+"/hooks/gh", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Hub-Signature-256", SignGitHub(secret, body))
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b.Fatalf("event %d: HTTP %d", i, resp.StatusCode)
		}
	}
}
