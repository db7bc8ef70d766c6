# corral's build. `make test` is what CI runs (.ci/run): it needs Go, and
# Node.js with npm for the MCP interop and conformance tests; modules, tools
# and npm packages come through the Go module proxy and the npm registry.

GO          ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# A count, not a duration: Go 1.26's fuzz coordinator can report a bare
# "context deadline exceeded" when a duration ends mid-execution
# (go.dev/issue/75804, fixed in Go 1.27), which made CI fail with no input
# to blame. A count has no deadline to race.
FUZZTIME    ?= 10000x

.PHONY: test console-deps build lint fuzz bench bench-durable bench-approvals conformance pii-eval chaos

## test: lint, every test with the race detector, the chaos test's short form (the audit stream's leader killed), the OTLP export against a real Collector receiver, the example policies' Rego tests, the MCP conformance suite, a short fuzz run
test: lint console-deps
	$(GO) test -race -count=1 ./...
	CORRAL_CHAOS=short $(GO) test -count=1 -run TestChaos ./test/chaos
	@# Allocation bounds are counted without the race detector, which adds its own.
	$(GO) test -count=1 -run 'Allocations' ./internal/policy
	cd test/otelcol && $(GO) test -count=1 ./...
	$(GO) run ./cmd/corral policy test examples/policies/payments
	$(MAKE) --no-print-directory conformance
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME)

## console-deps: Debian's Chromium for the web console's browser tests (test/console); nothing when it is there. Never a browser download: playwright-core drives this one.
console-deps:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

## conformance: the MCP conformance suite against /mcp/{source} (Node.js and npm; fetches Node 22 with npx)
conformance:
	CORRAL_CONFORMANCE=1 $(GO) test -count=1 -run TestConformance ./test/conformance

## build: the corral binary in bin/
build:
	$(GO) build -o bin/corral ./cmd/corral

## lint: gofmt, go mod tidy, go vet and staticcheck
lint:
	@unformatted=$$(gofmt -l $$($(GO) list -f '{{.Dir}}' ./...)); \
	if [ -n "$$unformatted" ]; then echo "not gofmt-formatted:"; echo "$$unformatted"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@# test/otelcol is a module of its own: the OpenTelemetry Collector's
	@# receiver cannot share a build with OPA (they need different gobwas/glob).
	@unformatted=$$(gofmt -l test/otelcol); \
	if [ -n "$$unformatted" ]; then echo "not gofmt-formatted:"; echo "$$unformatted"; exit 1; fi
	cd test/otelcol && $(GO) mod tidy -diff && $(GO) vet ./...
	@# bench/durable's peers are modules of their own too; building them takes
	@# minutes (Temporal's server), so lint only checks their formatting and
	@# make bench-durable vets them.
	@unformatted=$$(gofmt -l bench/durable/temporal bench/durable/dbos); \
	if [ -n "$$unformatted" ]; then echo "not gofmt-formatted:"; echo "$$unformatted"; exit 1; fi

## fuzz: fuzz every parser for FUZZTIME executions each (make fuzz FUZZTIME=1000000x for longer)
FUZZ_TARGETS := \
	config:FuzzDecode openapi:FuzzImport openapi:FuzzBuild tools:FuzzValidate tools:FuzzMatch \
	secret:FuzzOpen audit:FuzzToken audit:FuzzVerifyArchive audit:FuzzBound \
	policy:FuzzDecideArguments policy:FuzzCompile policy:FuzzDecodeInput policy:FuzzIsMutation \
	policy:FuzzHostOf policy:FuzzValidIBAN policy:FuzzLint policy:FuzzKeptDecisions edge/rest:FuzzDecodeBody pipeline:FuzzParseArguments pipeline:FuzzRequestDigest \
	identity:FuzzSignerVerify identity:FuzzIssuersVerify edge/oauth:FuzzToken \
	llm:FuzzDecodeRequest llm:FuzzSSEReader llm:FuzzOpenAIStream llm:FuzzErrorBody \
	llm:FuzzAnthropicStream llm:FuzzAnthropicTranslate llm:FuzzScriptedEmbed \
	llm:FuzzDecodeResponsesRequest llm:FuzzResponseEvents llm:FuzzResponsesStream \
	redact:FuzzFind redact:FuzzRoundTrip redact:FuzzRestorer redact:FuzzRedactJSON \
	budget:FuzzTaskToken ratelimit:FuzzTokenValue upstream:FuzzRetryAfter telemetry:FuzzExtractHTTP telemetry:FuzzDecodeSpans audit:FuzzAddrKey \
	telemetry:FuzzAppendJSONString telemetry:FuzzParseOTLPEndpoint cli:FuzzTraceArg cli:FuzzTaskEvents \
	tools/mcpsource:FuzzFrameLimiter tools/mcpsource:FuzzRequestID bus:FuzzOperation \
	orchestrator:FuzzFunctionName orchestrator:FuzzReplay orchestrator:FuzzParseSlip orchestrator:FuzzReplayRun config:FuzzWorkflow expr:FuzzCompile \
	approval:FuzzParseRules edge/rest:FuzzPreferWait notify:FuzzParsePress \
	trigger:FuzzParseStripe trigger:FuzzParseGitHub trigger:FuzzParseHMAC trigger:FuzzVerify \
	edge/a2a:FuzzDecodeRequest edge/a2a:FuzzParseChain \
	console:FuzzAllowed \
	orchestrator:FuzzMergePatch orchestrator:FuzzParseChain api:FuzzIfMatch \
	forwarded:FuzzClient forwarded:FuzzParseEntry
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz ./internal/$$pkg $$name"; \
		$(GO) test ./internal/$$pkg -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME); \
	done

## pii-eval: regenerate the PII evaluation sets with @faker-js/faker (Node.js and npm) and print precision and recall per type
PII_SEEDS ?= 1 2
pii-eval:
	cd internal/redact/testdata/evalgen && npm ci --no-audit --no-fund --silent
	@set -e; for s in $(PII_SEEDS); do \
		node internal/redact/testdata/evalgen/generate.mjs --seed $$s > internal/redact/testdata/eval/seed$$s.jsonl; \
	done
	$(GO) test -count=1 -run '^TestEvaluation$$' -v ./internal/redact | grep -vE '^=== '

## bench: the resource path against the substrate and a tool call against the upstream called directly, in one run
bench:
	$(GO) run ./bench

## bench-durable: durable agent steps per second on corral, Temporal (in-process server, SQLite) and DBOS Transact (PostgreSQL on 127.0.0.1:5432), in one run; several minutes
bench-durable:
	cd bench/durable/dbos && $(GO) vet ./...
	cd bench/durable/temporal && GOTOOLCHAIN=go1.27.3 $(GO) vet ./...
	$(GO) run ./bench/durable

## bench-approvals: 100,000 pending approvals: memory, the first page of the list, a decision reaching a second replica (bench/README.md, "Pending approvals"); about a minute
bench-approvals:
	$(GO) run ./bench/approvals -n 100000

## chaos: kill NATS nodes, leaders and a corral replica under load, then count what the upstream saw against the audit and the budget (test/chaos)
chaos:
	CORRAL_CHAOS=1 $(GO) test -count=1 -v -timeout 20m -run TestChaos ./test/chaos
