// Command everything is the MCP server the conformance test puts behind
// corral: it implements the tools that the server scenarios of
// @modelcontextprotocol/conformance call, as each scenario's description
// states them (test_simple_text, test_image_content, ...,
// json_schema_2020_12_tool). The suite's own reference server lives in the
// conformance repository and is not published to npm, so corral keeps this
// one, written from the scenarios' requirements with the Go SDK.
//
// It speaks stdio by default, as corral starts it (ToolSource spec.mcp.command),
// or Streamable HTTP with -http, to run the suite against it directly and
// see which scenarios it passes without corral in between:
//
//	go run ./test/conformance/everything -http 127.0.0.1:3001
//	npx -y node@22 test/conformance/node_modules/.bin/conformance server --url http://127.0.0.1:3001/mcp
//
// Resources, prompts and completions are left out: corral's MCP edge serves
// tools only.
package main

//lint:file-ignore SA1019 the scenarios exercise logging and sampling, which MCP 2026-07-28 deprecates but still carries

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	addr := flag.String("http", "", "serve Streamable HTTP at http://ADDR/mcp instead of stdio")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr); err != nil {
		log.Fatalf("everything: %v", err)
	}
}

func run(ctx context.Context, addr string) error {
	server := newServer()
	if addr == "" {
		return server.Run(ctx, &mcp.StdioTransport{})
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(os.Stderr, "everything: serving http://%s/mcp\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			return err
		}
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// noArguments is the input schema of the tools that take none.
var noArguments = json.RawMessage(`{"type":"object","properties":{}}`)

func newServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "corral-conformance-everything", Version: "1.0.0"}, &mcp.ServerOptions{
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}, Logging: &mcp.LoggingCapabilities{}},
	})
	// Every tool here only reads. Saying so matters behind corral: MCP
	// takes an unannotated tool as destructive, and corral's default policy
	// sends destructive tools to a human.
	add := func(name, description string, schema json.RawMessage, h mcp.ToolHandler) {
		s.AddTool(&mcp.Tool{Name: name, Description: description, InputSchema: schema, Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}}, h)
	}
	text := func(s string) []mcp.Content { return []mcp.Content{&mcp.TextContent{Text: s}} }

	add("test_simple_text", "Returns a simple text response.", noArguments,
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: text("This is a simple text response for testing.")}, nil
		})
	add("test_image_content", "Returns a 1x1 red PNG.", noArguments,
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.ImageContent{Data: redPixel, MIMEType: "image/png"}}}, nil
		})
	add("test_audio_content", "Returns a short silent WAV.", noArguments,
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.AudioContent{Data: silence, MIMEType: "audio/wav"}}}, nil
		})
	add("test_embedded_resource", "Returns an embedded text resource.", noArguments,
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{
				URI: "test://embedded-resource", MIMEType: "text/plain", Text: "This is an embedded resource content.",
			}}}}, nil
		})
	add("test_multiple_content_types", "Returns text, an image and a resource.", noArguments,
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{
				&mcp.TextContent{Text: "Multiple content types test:"},
				&mcp.ImageContent{Data: redPixel, MIMEType: "image/png"},
				&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{
					URI: "test://mixed-content-resource", MIMEType: "application/json", Text: `{"test":"data","value":123}`,
				}},
			}}, nil
		})
	add("test_tool_with_logging", "Logs three messages while it runs.", noArguments,
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			for i, msg := range []string{"Tool execution started", "Tool processing data", "Tool execution completed"} {
				if i > 0 {
					pause(ctx, 50*time.Millisecond)
				}
				if err := req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "info", Logger: "everything", Data: msg}); err != nil {
					return nil, err
				}
			}
			return &mcp.CallToolResult{Content: text("Tool with logging executed successfully")}, nil
		})
	add("test_error_handling", "Always fails.", noArguments,
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{IsError: true, Content: text("This tool intentionally returns an error for testing")}, nil
		})
	add("test_tool_with_progress", "Reports progress 0, 50 and 100 of 100.", noArguments,
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			token := req.Params.GetProgressToken()
			for i, p := range []float64{0, 50, 100} {
				if i > 0 {
					pause(ctx, 50*time.Millisecond)
				}
				if token == nil {
					continue
				}
				if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: token, Progress: p, Total: 100}); err != nil {
					return nil, err
				}
			}
			return &mcp.CallToolResult{Content: text("Tool with progress executed successfully")}, nil
		})
	add("test_sampling", "Asks the client's LLM to complete a prompt.",
		json.RawMessage(`{"type":"object","properties":{"prompt":{"type":"string","description":"The prompt to send to the LLM"}},"required":["prompt"]}`),
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var args struct{ Prompt string }
			if err := json.Unmarshal(req.Params.Arguments, &args); err != nil {
				return nil, err
			}
			res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{
				MaxTokens: 100,
				Messages:  []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: args.Prompt}}},
			})
			if err != nil {
				return &mcp.CallToolResult{IsError: true, Content: text("sampling failed: " + err.Error())}, nil
			}
			answer := ""
			if t, ok := res.Content.(*mcp.TextContent); ok {
				answer = t.Text
			}
			return &mcp.CallToolResult{Content: text("LLM response: " + answer)}, nil
		})
	add("test_elicitation", "Asks the user for a username and an email address.",
		json.RawMessage(`{"type":"object","properties":{"message":{"type":"string","description":"The message to show the user"}},"required":["message"]}`),
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var args struct{ Message string }
			if err := json.Unmarshal(req.Params.Arguments, &args); err != nil {
				return nil, err
			}
			res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{
				Message: args.Message,
				RequestedSchema: json.RawMessage(`{"type":"object","properties":{` +
					`"username":{"type":"string","description":"User's response"},` +
					`"email":{"type":"string","description":"User's email address"}},"required":["username","email"]}`),
			})
			if err != nil {
				return &mcp.CallToolResult{IsError: true, Content: text("elicitation failed: " + err.Error())}, nil
			}
			content, _ := json.Marshal(res.Content)
			return &mcp.CallToolResult{Content: text(fmt.Sprintf("User response: action=%s, content=%s", res.Action, content))}, nil
		})
	add("json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features", json.RawMessage(`{
		"$schema": "https://json-schema.org/draft/2020-12/schema",
		"type": "object",
		"$defs": {"address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
		"properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
		"additionalProperties": false
	}`), func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: text("Received: " + string(req.Params.Arguments))}, nil
	})
	return s
}

// pause waits d unless ctx ends first.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// redPixel is a 1x1 red PNG, encoded at start.
var redPixel = func() []byte {
	img := image.NewRGBA(image.Rect(0, 0, 1, 1))
	img.Set(0, 0, color.RGBA{R: 255, A: 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		panic(err)
	}
	return b.Bytes()
}()

// silence is a WAV file of 8 samples of 8-bit mono silence at 8 kHz.
var silence = func() []byte {
	samples := bytes.Repeat([]byte{128}, 8)
	var b bytes.Buffer
	w := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	b.WriteString("RIFF")
	w(uint32(36 + len(samples)))
	b.WriteString("WAVEfmt ")
	w(uint32(16))   // fmt chunk size
	w(uint16(1))    // PCM
	w(uint16(1))    // mono
	w(uint32(8000)) // sample rate
	w(uint32(8000)) // byte rate
	w(uint16(1))    // block align
	w(uint16(8))    // bits per sample
	b.WriteString("data")
	w(uint32(len(samples)))
	b.Write(samples)
	return b.Bytes()
}()
