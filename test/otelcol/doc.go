// Package otelcol proves that corral's OTLP export reaches a real
// OpenTelemetry Collector receiver, over gRPC and over HTTP.
//
// It is a module of its own because the Collector's dependencies and
// corral's cannot share one build (the Collector's confmap needs
// github.com/gobwas/glob v0.2.3, OPA needs v1.0.0). So it imports nothing of
// corral: its tests build corral's binaries from the main module and run
// them as processes, pointed at a receiver running in the test. Run it from
// the repository root with
//
//	cd test/otelcol && go test ./...
package otelcol
