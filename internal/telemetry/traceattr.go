package telemetry

import (
	"strconv"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
)

// The span attributes corral sets, so that every package names them alike.
// The gen_ai.* keys follow the OpenTelemetry GenAI semantic conventions
// (semconv v1.41.0, the newest Go release that carries them); the HTTP keys
// follow the HTTP client conventions; corral.* are corral's own.
// docs/observability.md lists them with the spans that carry them.
const (
	// AttrGenAIOperationName is "chat", "embeddings", "execute_tool" or
	// "invoke_agent": see the Op constants.
	AttrGenAIOperationName = semconv.GenAIOperationNameKey
	// AttrGenAIProviderName names the model provider ("openai",
	// "anthropic", ...).
	AttrGenAIProviderName = semconv.GenAIProviderNameKey
	// AttrGenAISystem is the provider's name under its older key, which
	// many backends still group by. Set it beside AttrGenAIProviderName.
	AttrGenAISystem            = attribute.Key("gen_ai.system")
	AttrGenAIRequestModel      = semconv.GenAIRequestModelKey
	AttrGenAIResponseModel     = semconv.GenAIResponseModelKey
	AttrGenAIRequestMaxTokens  = semconv.GenAIRequestMaxTokensKey
	AttrGenAIUsageInputTokens  = semconv.GenAIUsageInputTokensKey
	AttrGenAIUsageOutputTokens = semconv.GenAIUsageOutputTokensKey
	// AttrGenAIResponseFinishReasons is a string slice ("stop", "length",
	// "tool_calls").
	AttrGenAIResponseFinishReasons = semconv.GenAIResponseFinishReasonsKey
	AttrGenAIResponseID            = semconv.GenAIResponseIDKey
	AttrGenAIToolName              = semconv.GenAIToolNameKey
	AttrGenAIToolCallID            = semconv.GenAIToolCallIDKey
	AttrGenAIAgentName             = semconv.GenAIAgentNameKey
	// AttrGenAIConversationID carries the task id, which is what ties a
	// conversation's calls together in corral.
	AttrGenAIConversationID = semconv.GenAIConversationIDKey

	// Captured content (CaptureContent), only when capture is on.
	AttrGenAIInputMessages     = semconv.GenAIInputMessagesKey
	AttrGenAIOutputMessages    = semconv.GenAIOutputMessagesKey
	AttrGenAIToolCallArguments = semconv.GenAIToolCallArgumentsKey
	AttrGenAIToolCallResult    = semconv.GenAIToolCallResultKey

	AttrHTTPRequestMethod      = semconv.HTTPRequestMethodKey
	AttrHTTPResponseStatusCode = semconv.HTTPResponseStatusCodeKey
	AttrURLFull                = semconv.URLFullKey
	AttrServerAddress          = semconv.ServerAddressKey
	AttrServerPort             = semconv.ServerPortKey
	AttrErrorType              = semconv.ErrorTypeKey

	// AttrAgent is the acting agent; AttrPrincipal the user it acts for.
	AttrAgent     = attribute.Key("corral.agent")
	AttrPrincipal = attribute.Key("corral.principal")
	AttrTask      = attribute.Key("corral.task")
	// AttrEdge is the protocol the action came in on: rest, mcp, openai, a2a.
	AttrEdge       = attribute.Key("corral.edge")
	AttrToolSource = attribute.Key("corral.tool.source")
	AttrRequestID  = attribute.Key("corral.request_id")
	// AttrPolicyEffect is "allow", "deny", "approval" or "error";
	// AttrPolicyReasons a string slice; AttrPolicyRevision the digest of
	// the policy that decided.
	AttrPolicyEffect   = attribute.Key("corral.policy.effect")
	AttrPolicyReasons  = attribute.Key("corral.policy.reasons")
	AttrPolicyRevision = attribute.Key("corral.policy.revision")
	// AttrBudgetNames lists the budgets an action was charged to;
	// AttrBudgetExceeded names the one that refused it; AttrBudgetRemaining
	// is what is left of the tightest one after the charge.
	AttrBudgetNames     = attribute.Key("corral.budget.names")
	AttrBudgetExceeded  = attribute.Key("corral.budget.exceeded")
	AttrBudgetRemaining = attribute.Key("corral.budget.remaining")
	// AttrRateLimited names the RateLimit that refused an action.
	AttrRateLimited = attribute.Key("corral.ratelimit.refused")
	// AttrRedactCount is the number of values redacted; RedactCount gives
	// the per-type keys.
	AttrRedactCount = attribute.Key("corral.redact.count")
	// AttrCost is the action's cost in the model's pricing currency.
	AttrCost = attribute.Key("corral.cost")
	// AttrAuditID names the action's audit record.
	AttrAuditID = attribute.Key("corral.audit.id")
	// AttrCode is the problem code the action ended with (policy_denied,
	// upstream_timeout, ...); absent when it succeeded.
	AttrCode = attribute.Key("corral.code")
	// AttrReplayed marks an answer served from the idempotency record.
	AttrReplayed = attribute.Key("corral.idempotency.replayed")
	// AttrUpstreamAttempts counts the HTTP attempts an upstream call took.
	AttrUpstreamAttempts = attribute.Key("corral.upstream.attempts")
)

// The values of AttrGenAIOperationName corral uses.
const (
	OpChat        = "chat"
	OpEmbeddings  = "embeddings"
	OpExecuteTool = "execute_tool"
	OpInvokeAgent = "invoke_agent"
)

// The names of the pipeline's stage spans, children of the action span.
// A stage that did no work for an action gets no span.
const (
	StageAuthenticate = "authenticate"
	StageKillSwitch   = "killswitch"
	StagePolicy       = "policy"
	StageValidate     = "validate"
	StageRate         = "rate"
	StageBudget       = "budget"
	StageApproval     = "approval"
	StageRedact       = "redact"
	StageInvoke       = "invoke"
	StageInspect      = "inspect"
	StageAccount      = "account"
	StageAudit        = "audit"
)

// ActionSpanName is the name of an action's span as the GenAI conventions
// form it: the operation, then the tool or model ("execute_tool
// crm.get_order", "chat gpt-4o").
func ActionSpanName(op, target string) string {
	if target == "" {
		return op
	}
	return op + " " + target
}

// RedactCount is the attribute that counts the values of one kind a stage
// redacted: corral.redact.count.<kind>, e.g. corral.redact.count.email.
func RedactCount(kind string, n int) attribute.KeyValue {
	return attribute.Int(string(AttrRedactCount)+"."+kind, n)
}

// SetCode marks span as ended by a refusal or failure with corral's
// problem code: corral.code, and an error status whose description is the
// code (never the detail, which may quote the caller's input).
func SetCode(span trace.Span, code string) {
	if code == "" || !span.IsRecording() {
		return
	}
	span.SetAttributes(AttrCode.String(code))
	span.SetStatus(codes.Error, code)
}

// DefaultContentLimit is the most bytes of one captured content attribute
// when CaptureContent is given no limit.
const DefaultContentLimit = 8 << 10

// CaptureContent records text (a prompt, a completion, tool arguments or
// a raw response) as the attribute key on span, cut to limit bytes
// (DefaultContentLimit when limit <= 0) at a character boundary. A cut
// value ends with "…[truncated N bytes]", so nobody mistakes it for the
// whole. Callers capture only where the agent or tool asks for it, and
// pass text the redactor has already seen: this function does not redact.
// It does nothing for a span that is not recording.
func CaptureContent(span trace.Span, key attribute.Key, text string, limit int) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(key.String(truncateContent(text, limit)))
}

// truncateContent cuts s to at most limit bytes, plus the marker, without
// splitting a UTF-8 sequence.
func truncateContent(s string, limit int) string {
	if limit <= 0 {
		limit = DefaultContentLimit
	}
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…[truncated " + strconv.Itoa(len(s)-cut) + " bytes]"
}
