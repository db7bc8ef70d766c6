package demo

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
)

// StrikeEvent is what the shipping API posts when a port closes.
const StrikeEvent = `{"event":"port.disruption","port":"NLRTM","port_name":"Rotterdam","cause":"dock workers' strike","expected_hours":72,"shipments":["SHP-17"]}`

// PostWebhook posts body to url the way GitHub signs its webhooks
// (X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body in hex>), as the
// shipping API does; a wrong secret makes a request corral must refuse.
// It returns the answer's status and body.
func PostWebhook(ctx context.Context, url string, secret []byte, event string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, data, err
}
