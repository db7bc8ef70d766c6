// Command server is the MCP server the mcpsource tests start over stdio: it
// offers sourcetest's standard tools (echo, fail, slow), pid, which
// answers the process id so that a test can kill the process and see that
// the next one is another, and big, which answers as many bytes as asked.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type echoIn struct {
	Text string `json:"text"`
}

type echoOut struct {
	Text string `json:"text"`
}

type slowIn struct {
	Ms int `json:"ms"`
}

type slowOut struct {
	OK bool `json:"ok"`
}

type bigIn struct {
	Bytes int `json:"bytes"`
}

// bigResult is one text block of n bytes.
func bigResult(n int) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strings.Repeat("x", n)}}}
}

type pidOut struct {
	PID int `json:"pid"`
	// Env is the value of MCPSOURCE_TEST_ENV, to show that spec.mcp.env
	// reaches the process.
	Env string `json:"env"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	s := mcp.NewServer(&mcp.Implementation{Name: "mcpsource-test"}, nil)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "echo",
		Description: "Answers the text it is given.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true},
	}, func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoOut, error) {
		return nil, echoOut(in), nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "fail", Description: "Always fails."},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return nil, nil, errors.New("failing as asked")
		})
	mcp.AddTool(s, &mcp.Tool{Name: "slow", Description: "Waits ms milliseconds."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in slowIn) (*mcp.CallToolResult, slowOut, error) {
			select {
			case <-time.After(time.Duration(in.Ms) * time.Millisecond):
				return nil, slowOut{OK: true}, nil
			case <-ctx.Done():
				return nil, slowOut{}, ctx.Err()
			}
		})
	mcp.AddTool(s, &mcp.Tool{Name: "pid", Description: "Answers the process id."},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, pidOut, error) {
			return nil, pidOut{PID: os.Getpid(), Env: os.Getenv("MCPSOURCE_TEST_ENV")}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "big", Description: "Answers a text of the given size."},
		func(_ context.Context, _ *mcp.CallToolRequest, in bigIn) (*mcp.CallToolResult, any, error) {
			return bigResult(in.Bytes), nil, nil
		})
	fmt.Fprintln(os.Stderr, "mcpsource-test server ready")
	if err := s.Run(ctx, &mcp.StdioTransport{}); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}
