package mcpsource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/tools"
	"github.com/corral-dev/corral/internal/upstream"
)

type bigIn struct {
	Bytes int `json:"bytes"`
}

// bigServer serves newServer's tools, and big, over Streamable HTTP. big's
// answer is written by hand, in JSON or as an SSE event, a chunk at a time,
// so that the test knows how much of it the client took: sent, once done
// is closed.
type bigServer struct {
	*httptest.Server
	sse  bool
	sent atomic.Int64
	done chan struct{}
}

func serveBig(t *testing.T, sse bool) *bigServer {
	t.Helper()
	stop := make(chan struct{})
	s := newServer(stop)
	mcp.AddTool(s, &mcp.Tool{Name: "big", Description: "Answers a text of the given size."},
		func(context.Context, *mcp.CallToolRequest, bigIn) (*mcp.CallToolResult, any, error) {
			return nil, nil, errors.New("answered by bigServer")
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	b := &bigServer{sse: sse, done: make(chan struct{})}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var msg struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Name      string `json:"name"`
				Arguments bigIn  `json:"arguments"`
			} `json:"params"`
		}
		if json.Unmarshal(body, &msg) == nil && msg.Method == "tools/call" && msg.Params.Name == "big" {
			defer close(b.done)
			b.answer(w, msg.ID, msg.Params.Arguments.Bytes)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(b.Close)
	t.Cleanup(func() { close(stop) })
	return b
}

// answer writes a result with a text block of n bytes, until the client
// stops reading.
func (b *bigServer) answer(w http.ResponseWriter, id json.RawMessage, n int) {
	head := `{"jsonrpc":"2.0","id":` + string(id) + `,"result":{"content":[{"type":"text","text":"`
	tail := `"}]}}`
	if b.sse {
		w.Header().Set("Content-Type", "text/event-stream")
		head, tail = "event: message\ndata: "+head, tail+"\n\n"
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	write := func(p []byte) bool {
		m, err := w.Write(p)
		b.sent.Add(int64(m))
		return err == nil
	}
	if !write([]byte(head)) {
		return
	}
	for ; n > 0; n -= len(chunk) {
		if !write(chunk[:min(n, len(chunk))]) {
			return
		}
	}
	write([]byte(tail))
}

// callBigWhileSlow calls big for n bytes while a slow call is in flight on
// the same session (long enough to outlast big's answer on a loaded
// machine: producing 17 MB can take seconds), and checks that big alone fails, with
// upstream.ErrTooLarge, and that the session and the slow call live on.
func callBigWhileSlow(t *testing.T, src *Source, n int) {
	t.Helper()
	before := src.live()
	slow := make(chan error, 1)
	go func() {
		res, err := src.Call(t.Context(), tools.Call{Tool: findTool(t, src, "t.slow"), Arguments: json.RawMessage(`{"ms":5000}`)})
		if err == nil && (res.IsError || !strings.Contains(string(res.Structured), `"ok":true`)) {
			err = errors.New("answer " + string(res.Structured))
		}
		slow <- err
	}()
	args, _ := json.Marshal(bigIn{Bytes: n})
	_, err := src.Call(t.Context(), tools.Call{Tool: findTool(t, src, "t.big"), Arguments: args})
	if !errors.Is(err, upstream.ErrTooLarge) {
		t.Errorf("Call(t.big, %d bytes) = %v, want an error wrapping upstream.ErrTooLarge", n, err)
	}
	if err := <-slow; err != nil {
		t.Errorf("Call(t.slow) in flight beside the oversized answer = %v, want it answered", err)
	}
	if after := src.live(); after != before {
		t.Errorf("session after the oversized answer = %p, want the same session %p", after, before)
	}
	echo(t, src, "after the oversized answer")
}

// TestResultTooLargeHTTP: a 40 MB answer over HTTP is refused without
// being read whole, in both of Streamable HTTP's answer forms, and the
// session carries on.
func TestResultTooLargeHTTP(t *testing.T) {
	const n = 40 << 20
	for _, tt := range []struct {
		name string
		json bool
	}{{"sse", false}, {"json", true}} {
		t.Run(tt.name, func(t *testing.T) {
			ts := serveBig(t, !tt.json)
			src := open(t, "t", &config.ToolSourceSpec{MCP: &config.MCPSource{URL: ts.URL}}, testEnv(t, nil))
			callBigWhileSlow(t, src, n)
			<-ts.done
			// Loopback socket buffers hold several MB; the rest was never
			// sent, because the client stopped reading at the cap.
			got := ts.sent.Load()
			t.Logf("the server sent %d bytes of a %d-byte answer", got, n)
			if got > n*3/4 {
				t.Errorf("the server sent %d bytes of a %d-byte answer, want the client to stop reading near %d", got, n, maxResult)
			}
		})
	}
}

// TestResultTooLargeStdio: a 17 MB answer over stdio (over the SDK's 16 MiB
// line limit) fails its call, not the session: the server is not
// restarted and other calls in flight are answered.
func TestResultTooLargeStdio(t *testing.T) {
	spec := &config.ToolSourceSpec{MCP: &config.MCPSource{Command: []string{stdioServer(t)}}}
	src := open(t, "t", spec, testEnv(t, nil))
	first := pid(t, src)
	callBigWhileSlow(t, src, 17<<20)
	if again := pid(t, src); again.PID != first.PID {
		t.Errorf("server pid after the oversized answer = %d, want %d (no restart)", again.PID, first.PID)
	}
}

var limiterTests = []struct {
	name  string
	in    string
	limit int
	f     framing
	want  string
}{
	{"lines within the limit pass", "{\"id\":1,\"result\":{}}\n{\"id\":2}\n", 32, byLine, "{\"id\":1,\"result\":{}}\n{\"id\":2}\n"},
	{"a last line without newline passes", `{"id":1}`, 32, byLine, `{"id":1}`},
	{"an over-long answer becomes an error for its id", "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"t\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}\n{\"id\":8,\"result\":1}\n", 40, byLine,
		string(tooLargeError(json.RawMessage("7"), 40)) + "\n{\"id\":8,\"result\":1}\n"},
	{"the id after the result", "{\"result\":{\"t\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\",\"id\":3},\"id\":\"a\\\"b\",\"jsonrpc\":\"2.0\"}\n", 40, byLine,
		string(tooLargeError(json.RawMessage(`"a\"b"`), 40)) + "\n"},
	{"an over-long notification is dropped", "{\"method\":\"x\",\"params\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n{\"id\":8,\"result\":1}\n", 40, byLine, "{\"id\":8,\"result\":1}\n"},
	{"an over-long request from the server is dropped", "{\"id\":4,\"method\":\"x\",\"params\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n", 40, byLine, ""},
	{"garbage over the limit is dropped", strings.Repeat("}{\"[", 30) + "\n{}\n", 40, byLine, "{}\n"},
	{"events within the limit pass", "event: message\ndata: {}\n\ndata: 1\n\n", 32, byEvent, "event: message\ndata: {}\n\ndata: 1\n\n"},
	{"an over-long event is dropped without a request id", "data: " + strings.Repeat("x", 50) + "\n\ndata: 2\n\n", 32, byEvent, "data: 2\n\n"},
	{"a body within the limit passes", "{\"id\":1,\n\"result\":{}}\n", 32, byBody, "{\"id\":1,\n\"result\":{}}\n"},
}

func TestFrameLimiter(t *testing.T) {
	for _, tt := range limiterTests {
		t.Run(tt.name, func(t *testing.T) {
			l := newFrameLimiter(strings.NewReader(tt.in), tt.limit, tt.f)
			l.standIn = func(sc *idScanner) []byte {
				if id, ok := sc.responseID(); ok {
					return append(tooLargeError(id, tt.limit), '\n')
				}
				return nil
			}
			got, err := io.ReadAll(&smallReader{r: l})
			if err != nil {
				t.Fatalf("ReadAll() error: %v", err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("frameLimiter(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// smallReader reads through small buffers, so that frames span reads.
type smallReader struct{ r io.Reader }

func (s *smallReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 7)]) }

// TestFrameLimiterStopsReading: over HTTP, with the request's id known,
// nothing past the limit is read and the stand-in answers.
func TestFrameLimiterStopsReading(t *testing.T) {
	src := &countingReader{r: strings.NewReader(`{"result":"` + strings.Repeat("x", 1<<20) + `"}`)}
	l := newFrameLimiter(src, 1024, byBody)
	l.drain = false
	l.standIn = func(*idScanner) []byte { return tooLargeError(json.RawMessage("5"), 1024) }
	got, err := io.ReadAll(l)
	if err != nil {
		t.Fatalf("ReadAll() error: %v", err)
	}
	if !bytes.Equal(got, tooLargeError(json.RawMessage("5"), 1024)) {
		t.Errorf("ReadAll() = %q, want the stand-in error", got)
	}
	if src.n > 128<<10 {
		t.Errorf("read %d bytes of the body, want no more than the limit and one buffer", src.n)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestAsTooLarge(t *testing.T) {
	var msg struct {
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(tooLargeError(json.RawMessage("1"), 99), &msg); err != nil {
		t.Fatalf("tooLargeError is not JSON: %v", err)
	}
	var e jsonrpc.Error
	if err := json.Unmarshal(msg.Error, &e); err != nil {
		t.Fatal(err)
	}
	if err, ok := asTooLarge(&e); !ok || !errors.Is(err, upstream.ErrTooLarge) {
		t.Errorf("asTooLarge(stand-in) = %v, %v, want upstream.ErrTooLarge", err, ok)
	}
	if _, ok := asTooLarge(&jsonrpc.Error{Code: tooLargeCode, Message: "x", Data: json.RawMessage(`{"other":1}`)}); ok {
		t.Errorf("asTooLarge(another internal error) = true, want false")
	}
}

func FuzzFrameLimiter(f *testing.F) {
	for _, tt := range limiterTests {
		f.Add([]byte(tt.in), tt.limit, int(tt.f))
	}
	f.Fuzz(func(t *testing.T, in []byte, limit, f int) {
		limit = 1 + abs(limit)%256
		l := newFrameLimiter(bytes.NewReader(in), limit, framing(abs(f)%3))
		l.standIn = func(sc *idScanner) []byte {
			id, ok := sc.responseID()
			if !ok {
				return nil
			}
			if !json.Valid(id) {
				t.Fatalf("responseID() = %q, not JSON", id)
			}
			return append(tooLargeError(id, limit), '\n')
		}
		out, err := io.ReadAll(l)
		if err != nil {
			t.Fatalf("ReadAll() error: %v", err)
		}
		if len(out) > len(in)+len(tooLargeError(make(json.RawMessage, maxIDBytes), limit))*(len(in)/limit+1) {
			t.Fatalf("%d bytes out of %d in", len(out), len(in))
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

var requestIDTests = []struct{ body, want string }{
	{`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}`, "7"},
	{`{"method":"tools/call","params":{"x":[1,2]},"id":"a"}`, `"a"`},
	{`{"jsonrpc":"2.0","method":"notifications/initialized"}`, ""},
	{`{"id":null}`, ""},
	{`[{"id":1}]`, ""},
	{`not json`, ""},
}

func TestRequestID(t *testing.T) {
	for _, tt := range requestIDTests {
		req, _ := http.NewRequest(http.MethodPost, "http://x/mcp", strings.NewReader(tt.body))
		if got := string(requestID(req)); got != tt.want {
			t.Errorf("requestID(%s) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

func FuzzRequestID(f *testing.F) {
	for _, tt := range requestIDTests {
		f.Add([]byte(tt.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, _ := http.NewRequest(http.MethodPost, "http://x/mcp", bytes.NewReader(body))
		if id := requestID(req); id != nil && !json.Valid(id) {
			t.Fatalf("requestID(%q) = %q, not JSON", body, id)
		}
	})
}

// TestLimitTransportContentLength: an answer whose Content-Length is over
// the cap is replaced without reading any of it.
func TestLimitTransportContentLength(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "1048576")
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for range 16 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(ts.Close)
	rt := &limitTransport{base: http.DefaultTransport, limit: 1024}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, ts.URL, strings.NewReader(`{"jsonrpc":"2.0","id":3,"method":"tools/call"}`))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(body, tooLargeError(json.RawMessage("3"), 1024)) {
		t.Errorf("body = %.100q, %v; want the stand-in error for id 3", body, err)
	}
}
