package llm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrEventTooLarge is returned by SSEReader.Next for an event, or a line,
// longer than the reader's limit.
var ErrEventTooLarge = errors.New("server-sent event too large")

// SSEReader reads a stream of server-sent events as the WHATWG HTML
// standard defines them: lines ending in CRLF, LF or CR; "field: value"
// lines; comments starting with ':'; a blank line ending each event. It
// keeps the event and data fields (OpenAI sends only data, Anthropic both)
// and ignores id and retry, which corral has no use for.
type SSEReader struct {
	scan *bufio.Scanner
	max  int
	// skipLF: the last line ended in CR, so a LF right after it belongs to
	// the same line ending.
	skipLF bool
	// searched is how much of the line being read holds no line ending.
	searched int
	first    bool
}

// NewSSEReader returns a reader of the events in r. An event's data, and
// any one line, may be at most max bytes.
func NewSSEReader(r io.Reader, max int) *SSEReader {
	s := &SSEReader{max: max, first: true}
	s.scan = bufio.NewScanner(r)
	s.scan.Buffer(make([]byte, 0, min(4096, max+1)), max+1)
	s.scan.Split(s.splitLines)
	return s
}

// Next returns the next event: its type (empty when it had no event line)
// and its data lines joined by "\n". Events without data are skipped, as
// the standard says. Next returns io.EOF at the end of the stream; an event
// cut off by the end (no blank line after it) is dropped. The data slice is
// the caller's to keep.
func (s *SSEReader) Next() (event string, data []byte, err error) {
	hasData := false
	for s.scan.Scan() {
		line := s.scan.Bytes()
		if s.first {
			s.first = false
			line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		}
		if len(line) == 0 {
			if hasData {
				return event, data, nil
			}
			event = ""
			continue
		}
		if line[0] == ':' {
			continue // a comment, often a keep-alive
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if found {
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(name) {
		case "event":
			event = string(value)
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			if len(data)+len(value) > s.max {
				return "", nil, fmt.Errorf("sse: event data over %d bytes: %w", s.max, ErrEventTooLarge)
			}
			data = append(data, value...)
			hasData = true
		}
	}
	if err := s.scan.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return "", nil, fmt.Errorf("sse: line over %d bytes: %w", s.max, ErrEventTooLarge)
		}
		return "", nil, err
	}
	return "", nil, io.EOF
}

// splitLines is a bufio.SplitFunc for lines ending in CRLF, LF or CR. It
// never waits for the byte after a CR, so that an event ending in CR is
// delivered as soon as it arrives; a LF that follows is skipped with the
// next line instead. (A split function must not advance without a token:
// bufio.Scanner stops at EOF when it does.) While a long line arrives, the
// scanner offers it again with each read; searched remembers how much of it
// holds no line ending, so that reading a line costs its length, not its
// length squared.
func (s *SSEReader) splitLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	skip := 0
	if s.skipLF && len(data) > 0 && data[0] == '\n' {
		skip = 1
	}
	rest := data[skip:]
	if i := lineEnd(rest[min(s.searched, len(rest)):]); i >= 0 {
		i += min(s.searched, len(rest))
		s.skipLF, s.searched = rest[i] == '\r', 0
		return skip + i + 1, rest[:i], nil
	}
	if atEOF && len(rest) > 0 {
		s.skipLF, s.searched = false, 0
		return len(data), rest, nil
	}
	s.searched = len(rest)
	return 0, nil, nil
}

// lineEnd returns the index of the first CR or LF in b, or -1.
func lineEnd(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	before := b
	if i >= 0 {
		before = b[:i]
	}
	if j := bytes.IndexByte(before, '\r'); j >= 0 {
		return j
	}
	return i
}
