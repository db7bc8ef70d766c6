package a2a

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/corral-dev/corral/internal/problem"
)

// The JSON-RPC error codes: JSON-RPC's own, and A2A's (spec section 5.4).
const (
	codeParseError        = -32700
	codeInvalidRequest    = -32600
	codeMethodNotFound    = -32601
	codeInvalidParams     = -32602
	codeInternal          = -32603
	codeTaskNotFound      = -32001
	codeTaskNotCancelable = -32002
	codePushNotSupported  = -32003
	codeUnsupported       = -32004
	codeContentType       = -32005
	codeInvalidResponse   = -32006
	codeVersion           = -32009
)

// codeCorralBase: a corral refusal that is none of A2A's errors is sent
// with code -31000 minus its HTTP status (-31401 unauthenticated, -31403
// policy_denied, -31409 agent_cycle, -31429 rate_limited, -31503
// substrate_unavailable), its problem code in data.
const codeCorralBase = -31000

// maxBody bounds a JSON-RPC request.
const maxBody = 1 << 20

// request is a JSON-RPC 2.0 request.
type request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

// response is a JSON-RPC 2.0 response: a result or an error.
type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

// rpcError is a JSON-RPC error; Data holds google.rpc.ErrorInfo objects
// (A2A's error detail) naming corral's problem code.
type rpcError struct {
	Code    int         `json:"code"`
	Message string      `json:"message"`
	Data    []errorInfo `json:"data,omitempty"`
	// status is the HTTP status the error is sent with when it is not
	// inside a stream (401 for a missing credential, else 200).
	status int
}

func (e *rpcError) Error() string { return fmt.Sprintf("a2a: %d %s", e.Code, e.Message) }

// errorInfo is google.rpc.ErrorInfo in ProtoJSON's Any form.
type errorInfo struct {
	Type     string            `json:"@type"`
	Reason   string            `json:"reason"`
	Domain   string            `json:"domain"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// ProblemCode returns the corral problem code an A2A error carries in its
// data, or "".
func (e *rpcError) ProblemCode() string {
	for _, d := range e.Data {
		if d.Domain == "corral.dev" {
			return d.Reason
		}
	}
	return ""
}

func rpcErr(code int, problemCode, message string) *rpcError {
	return &rpcError{Code: code, Message: message, Data: []errorInfo{{
		Type: "type.googleapis.com/google.rpc.ErrorInfo", Reason: problemCode, Domain: "corral.dev",
	}}}
}

func invalidParams(format string, args ...any) *rpcError {
	return rpcErr(codeInvalidParams, problem.InvalidRequest, fmt.Sprintf(format, args...))
}

// toRPC turns any error into the JSON-RPC error it is sent as: A2A's code
// where one fits, corral's problem code always in data.
func toRPC(err error) *rpcError {
	var re *rpcError
	if errors.As(err, &re) {
		return re
	}
	var pe *problem.Error
	if !errors.As(err, &pe) {
		return rpcErr(codeInternal, problem.Internal, "internal error")
	}
	code := codeCorralBase - pe.Status
	switch pe.Code {
	case problem.TaskNotFound:
		code = codeTaskNotFound
	case problem.InvalidRequest, problem.RequestTooLarge:
		code = codeInvalidParams
	case problem.Internal:
		code = codeInternal
	}
	e := rpcErr(code, pe.Code, pe.Detail)
	md := map[string]string{"status": strconv.Itoa(pe.Status)}
	if pe.ApprovalID != "" {
		md["approval_id"] = pe.ApprovalID
	}
	if pe.AuditID != "" {
		md["audit_id"] = pe.AuditID
	}
	e.Data[0].Metadata = md
	if pe.Status == http.StatusUnauthorized {
		e.status = http.StatusUnauthorized
	}
	return e
}

// decodeRequest reads one JSON-RPC request. It never fails without a
// JSON-RPC error to answer with.
func decodeRequest(body []byte) (*request, *rpcError) {
	body = bytes.TrimSpace(body)
	if !json.Valid(body) {
		return nil, rpcErr(codeParseError, problem.InvalidRequest, "invalid JSON payload")
	}
	if len(body) > 0 && body[0] == '[' {
		return nil, rpcErr(codeInvalidRequest, problem.InvalidRequest, "one JSON-RPC request per call (batches are not supported)")
	}
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, rpcErr(codeInvalidRequest, problem.InvalidRequest, "not a JSON-RPC 2.0 request object: "+err.Error())
	}
	if req.JSONRPC != "2.0" {
		return &req, rpcErr(codeInvalidRequest, problem.InvalidRequest, `jsonrpc: must be "2.0"`)
	}
	if !validID(req.ID) {
		req.ID = nil
		return &req, rpcErr(codeInvalidRequest, problem.InvalidRequest, "id: a string or a number")
	}
	if req.Method == "" {
		return &req, rpcErr(codeInvalidRequest, problem.InvalidRequest, "method: required")
	}
	if len(req.Params) > 0 && req.Params[0] != '{' && !bytes.Equal(req.Params, []byte("null")) {
		return &req, rpcErr(codeInvalidParams, problem.InvalidRequest, "params: an object")
	}
	return &req, nil
}

// validID: absent, null, a string or a number (JSON-RPC 2.0).
func validID(id json.RawMessage) bool {
	if len(id) == 0 || bytes.Equal(id, []byte("null")) {
		return true
	}
	if len(id) > 256 {
		return false
	}
	switch id[0] {
	case '"':
		var s string
		return json.Unmarshal(id, &s) == nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var n json.Number
		return json.Unmarshal(id, &n) == nil
	}
	return false
}

// decodeParams decodes params into v, naming the bad field when it fails.
func decodeParams(params json.RawMessage, v any) *rpcError {
	if len(params) == 0 || bytes.Equal(params, []byte("null")) {
		params = []byte("{}")
	}
	if err := json.Unmarshal(params, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return invalidParams("params.%s: a %s was sent where %s is expected", te.Field, te.Value, typeName(te.Type.Kind().String()))
		}
		return invalidParams("params: %v", err)
	}
	return nil
}

func typeName(kind string) string {
	switch kind {
	case "struct", "map":
		return "an object"
	case "slice":
		return "an array"
	case "int", "int64", "int32":
		return "a whole number"
	case "bool":
		return "true or false"
	case "ptr":
		return "a value of another type"
	}
	return "a " + kind
}
