// Command rawserver is a misbehaving MCP server for the mcpsource tests,
// speaking JSON-RPC over stdio by hand. MCPSOURCE_RAW_MODE says how it
// misbehaves once it has answered its first tools/list:
//
//   - flood: sends notifications/tools/list_changed every 10 ms, 150 times;
//     its tool stats answers how many tools/list it got meanwhile and how
//     long the flood took.
//   - garbage: writes a line that is not JSON.
//
// Each start appends a line to the file MCPSOURCE_RAW_STARTS names.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

type message struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method"`
}

var (
	mu  sync.Mutex
	out = bufio.NewWriter(os.Stdout)
)

func send(format string, args ...any) {
	mu.Lock()
	defer mu.Unlock()
	fmt.Fprintf(out, format+"\n", args...)
	out.Flush()
}

func main() {
	if f := os.Getenv("MCPSOURCE_RAW_STARTS"); f != "" {
		if fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			fmt.Fprintln(fh, os.Getpid())
			fh.Close()
		}
	}
	mode := os.Getenv("MCPSOURCE_RAW_MODE")
	var (
		statsMu sync.Mutex
		lists   int
		flood   time.Duration
		done    bool
		started bool
	)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	for in.Scan() {
		var m message
		if json.Unmarshal(in.Bytes(), &m) != nil {
			continue
		}
		switch m.Method {
		case "initialize":
			send(`{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"raw"}}}`, m.ID)
		case "tools/list":
			send(`{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"stats","inputSchema":{"type":"object"}}]}}`, m.ID)
			statsMu.Lock()
			lists++
			first := !started
			started = true
			statsMu.Unlock()
			if !first {
				continue
			}
			switch mode {
			case "garbage":
				send("this is not JSON")
			case "flood":
				go func() {
					start := time.Now()
					for range 150 {
						send(`{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`)
						time.Sleep(10 * time.Millisecond)
					}
					statsMu.Lock()
					flood, done = time.Since(start), true
					statsMu.Unlock()
				}()
			}
		case "tools/call":
			statsMu.Lock()
			send(`{"jsonrpc":"2.0","id":%s,"result":{"content":[],"structuredContent":{"lists":%d,"flood_ms":%d,"done":%t}}}`, m.ID, lists, flood.Milliseconds(), done)
			statsMu.Unlock()
		default:
			if len(m.ID) > 0 {
				send(`{"jsonrpc":"2.0","id":%s,"result":{}}`, m.ID)
			}
		}
	}
}
