package mcpsource

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/corral-dev/corral/internal/upstream"
)

// maxResult bounds one message from an MCP server, a tool's answer above
// all: the same 10 MiB as the OpenAPI path's response cap. A bigger one is
// never buffered whole. It is replaced by a JSON-RPC error answering the
// same request, so that only that call fails and the session, shared by
// every agent's calls, carries on: the SDK would otherwise read an HTTP
// answer unbounded, and end a stdio session (restarting the server) at a
// line over 16 MiB.
const maxResult = 10 << 20

// tooLargeCode and tooLargeMarker mark the JSON-RPC error that stands in for
// an answer over the cap; callOnce turns it into upstream.ErrTooLarge. A
// server could send the same error itself: it would only fail its own call.
const (
	tooLargeCode   = -32603 // internal error
	tooLargeMarker = "dev.corral/too-large"
)

// tooLargeError is the stand-in for an answer to request id over limit
// bytes, as one JSON text without a newline.
func tooLargeError(id json.RawMessage, limit int) []byte {
	return fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%s,"error":{"code":%d,"message":"the answer is over %d bytes","data":{%q:%d}}}`,
		id, tooLargeCode, limit, tooLargeMarker, limit)
}

// asTooLarge reports whether e is the stand-in tooLargeError wrote, and if
// so returns it as upstream.ErrTooLarge.
func asTooLarge(e *jsonrpc.Error) (error, bool) {
	if e.Code != tooLargeCode || len(e.Data) == 0 {
		return nil, false
	}
	var data map[string]json.Number
	if json.Unmarshal(e.Data, &data) != nil {
		return nil, false
	}
	limit, ok := data[tooLargeMarker]
	if !ok {
		return nil, false
	}
	return fmt.Errorf("%w: the mcp answer is over %s bytes", upstream.ErrTooLarge, limit), true
}

// framing says where one message ends in what a server sends.
type framing int

const (
	byLine  framing = iota // stdio: one message per line
	byEvent                // an SSE stream: one per event, ending at a blank line
	byBody                 // an HTTP answer in JSON: the whole body
)

// frameLimiter sits between a server and the SDK: it passes frames of up to
// limit bytes through, and replaces a longer one, never holding more than
// limit bytes of it, by what standIn makes of it (nil: nothing). Over
// stdio the rest of the line is read (later lines are other messages) and
// idScanner finds, as it streams past, the id the line answers; over HTTP
// the request's id is known and reading stops at the limit.
type frameLimiter struct {
	r       *bufio.Reader
	body    io.Closer // closed when reading stops early; may be nil
	limit   int
	framing framing
	// drain reads an over-long frame to its end, through the scanner,
	// instead of stopping there.
	drain   bool
	standIn func(sc *idScanner) []byte

	out     []byte // what Read serves next
	frame   []byte // the frame being read, while within limit
	stopped bool   // reading stopped at an over-long frame: EOF from here on
}

func newFrameLimiter(r io.Reader, limit int, f framing) *frameLimiter {
	return &frameLimiter{r: bufio.NewReaderSize(r, 64<<10), limit: limit, framing: f, drain: true}
}

func (l *frameLimiter) Read(p []byte) (int, error) {
	for len(l.out) == 0 {
		if l.stopped {
			return 0, io.EOF
		}
		if err := l.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, l.out)
	l.out = l.out[n:]
	return n, nil
}

// Close closes the body beneath, if there is one.
func (l *frameLimiter) Close() error {
	if l.body == nil {
		return nil
	}
	return l.body.Close()
}

// next reads one frame into out, or, at the end of the input, returns the
// error (a last frame without its end is passed on first).
func (l *frameLimiter) next() error {
	l.frame = l.frame[:0]
	if cap(l.frame) > 1<<20 {
		l.frame = nil // a big frame's buffer is not kept for the small ones after it
	}
	var sc *idScanner // set once the frame is over the limit
	lineStart := true
	for {
		chunk, err := l.r.ReadSlice('\n')
		end := err == nil && l.ends(lineStart, chunk)
		lineStart = err == nil
		if sc == nil && len(l.frame)+len(chunk) > l.limit {
			sc = &idScanner{}
			sc.write(l.frame)
			l.frame = l.frame[:0]
		}
		if sc == nil {
			l.frame = append(l.frame, chunk...)
		} else {
			sc.write(chunk)
			if !l.drain {
				l.stopped = true
				if l.body != nil {
					_ = l.body.Close() // no more of it is read
				}
				end = true
			}
		}
		more := err == nil || errors.Is(err, bufio.ErrBufferFull)
		if !end && more {
			continue
		}
		l.out = l.frame
		if sc != nil && l.standIn != nil {
			l.out = l.standIn(sc)
		} else if sc != nil {
			l.out = nil
		}
		if len(l.out) == 0 && !more {
			return err
		}
		return nil
	}
}

// ends reports whether a complete line ends the frame.
func (l *frameLimiter) ends(lineStart bool, line []byte) bool {
	switch l.framing {
	case byLine:
		return true
	case byEvent:
		return lineStart && len(bytes.TrimRight(line, "\r\n")) == 0
	}
	return false
}

// idScanner finds, in a JSON-RPC message streamed through write, the id and
// whether it is a response (it has "result" or "error"), holding nothing but
// the id's few bytes. It is a tokenizer of just enough JSON: strings with
// their escapes, nesting, and the members of the outermost object.
type idScanner struct {
	n        int // bytes seen
	depth    int
	inString bool
	escaped  bool
	// Of the outermost object:
	wantKey  bool   // a member's key comes next
	inKey    bool   // the string being read is a key
	key      []byte // the key being read, or the last one read (capped)
	inValue  bool   // reading the value of the last key, at depth 1
	idValue  []byte // the id's value as written (capped)
	idDone   bool
	response bool // "result" or "error" is a member
	broken   bool // not an object, or an id that cannot be one
}

// maxIDBytes caps the id kept; maxKeyBytes the member names compared.
const (
	maxIDBytes  = 256
	maxKeyBytes = 8
)

func (s *idScanner) write(p []byte) {
	s.n += len(p)
	for _, c := range p {
		if s.broken {
			return
		}
		s.byte(c)
	}
}

func (s *idScanner) byte(c byte) {
	capturing := s.inValue && s.depth == 1 && string(s.key) == "id"
	if s.inString {
		switch {
		case s.escaped:
			s.escaped = false
		case c == '\\':
			s.escaped = true
		case c == '"':
			s.inString = false
			if s.inKey {
				s.inKey = false
			}
		}
		if s.inKey && s.inString && len(s.key) <= maxKeyBytes {
			s.key = append(s.key, c) // a longer key is none of those looked for
		}
		if capturing {
			s.capture(c)
		}
		return
	}
	switch c {
	case ' ', '\t', '\r', '\n':
		return
	case '"':
		s.inString = true
		if s.depth == 1 && s.wantKey {
			s.wantKey, s.inKey, s.key = false, true, s.key[:0]
			return
		}
	case '{', '[':
		if s.depth == 0 && c != '{' {
			s.broken = true
			return
		}
		s.depth++
		if s.depth == 1 {
			s.wantKey = true
			return
		}
	case '}', ']':
		s.depth--
		if s.depth == 0 {
			s.endValue()
			return
		}
	case ':':
		if s.depth == 1 {
			s.inValue = true
			switch string(s.key) {
			case "result", "error":
				s.response = true
			case "id":
				s.broken = s.broken || s.idDone // an id given twice is no id
			}
			return
		}
	case ',':
		if s.depth == 1 {
			s.endValue()
			s.wantKey = true
			return
		}
	}
	if capturing {
		if s.depth > 1 || c == '{' || c == '[' {
			s.broken = true // an id is a string or a number
			return
		}
		s.capture(c)
	}
}

func (s *idScanner) capture(c byte) {
	if len(s.idValue) >= maxIDBytes {
		s.broken = true
		return
	}
	s.idValue = append(s.idValue, c)
}

func (s *idScanner) endValue() {
	if s.inValue && string(s.key) == "id" {
		s.idDone = true
	}
	s.inValue = false
}

// responseID returns the id of the message scanned, if it is a response
// whose id is a string or an integer.
func (s *idScanner) responseID() (json.RawMessage, bool) {
	if s.broken || !s.idDone || !s.response || !json.Valid(s.idValue) {
		return nil, false
	}
	switch s.idValue[0] {
	case '"':
		return bytes.Clone(s.idValue), true
	default:
		if _, err := strconv.ParseInt(string(s.idValue), 10, 64); err != nil {
			return nil, false
		}
		return bytes.Clone(s.idValue), true
	}
}

// limitTransport bounds what the SDK reads of each HTTP answer: a JSON body
// or an SSE event over limit is replaced by tooLargeError for the request's
// id, and the rest of it is not read.
type limitTransport struct {
	base  http.RoundTripper
	limit int
}

// RoundTrip implements http.RoundTripper.
func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	id := requestID(req)
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.Body == nil || resp.Body == http.NoBody {
		return resp, err
	}
	f := byBody
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "text/event-stream" {
		f = byEvent
	}
	if id != nil && f == byBody && resp.ContentLength > int64(t.limit) {
		// Said to be over the cap: nothing of it is read.
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(tooLargeError(id, t.limit)))
		resp.ContentLength = -1
		resp.Header.Del("Content-Length")
		return resp, nil
	}
	lim := newFrameLimiter(resp.Body, t.limit, f)
	lim.body = resp.Body
	if id != nil {
		// The stand-in answers the call; nothing after it matters.
		lim.drain = false
		lim.standIn = func(*idScanner) []byte {
			msg := tooLargeError(id, t.limit)
			if f == byEvent {
				return fmt.Appendf(nil, "event: message\ndata: %s\n\n", msg)
			}
			return msg
		}
	}
	resp.Body = lim
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	return resp, nil
}

// requestID returns the id of the JSON-RPC request a POST carries, or nil
// (a notification, a batch, a GET).
func requestID(req *http.Request) json.RawMessage {
	if req.Method != http.MethodPost || req.GetBody == nil {
		return nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil
	}
	defer body.Close()
	return memberID(json.NewDecoder(body))
}

// memberID reads an object's members until "id" and returns its value, or
// nil. The SDK writes the id before the params, so the arguments are
// seldom read.
func memberID(dec *json.Decoder) json.RawMessage {
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil // a batch, or not JSON
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil
		}
		if key == "id" {
			if string(v) == "null" {
				return nil
			}
			return v
		}
	}
	return nil
}
