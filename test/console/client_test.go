package console_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
)

// client is a browser's view of the console: a cookie jar and the CSRF
// token the sign-in answered.
type client struct {
	base string
	http *http.Client
	csrf string
}

func signIn(t *testing.T, base, credential string) *client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &client{base: base, http: &http.Client{Jar: jar}}
	body, _ := json.Marshal(map[string]string{"credential": credential})
	req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/ui/api/session", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var info struct{ CSRF string }
	if err := json.Unmarshal(readAll(t, resp), &info); resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("sign in: %d %v", resp.StatusCode, err)
	}
	c.csrf = info.CSRF
	return c
}

func (c *client) get(t *testing.T, path string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", c.base+path, nil)
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (c *client) post(t *testing.T, path, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", c.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Corral-CSRF", c.csrf)
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
