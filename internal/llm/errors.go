package llm

import (
	"errors"
	"fmt"
	"time"
)

// ProviderError is a provider's refusal or failure, as corral understood it.
type ProviderError struct {
	// Status is the provider's HTTP status; 0 when no answer came.
	Status int
	// Type and Message are from the provider's error body, when it had one.
	Type    string
	Message string
	// RetryAfter is the provider's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Err is the cause: a transport error, a time-out, a decoding error.
	Err error
}

func (e *ProviderError) Error() string {
	switch {
	case e.Status != 0 && e.Message != "":
		return fmt.Sprintf("provider answered HTTP %d: %s", e.Status, e.Message)
	case e.Status != 0:
		return fmt.Sprintf("provider answered HTTP %d", e.Status)
	case e.Err != nil:
		return "provider call failed: " + e.Err.Error()
	}
	return "provider call failed"
}

func (e *ProviderError) Unwrap() error { return e.Err }

// Sentinel causes, for errors.Is.
var (
	// ErrTimeout: the provider did not answer (or start streaming) in time.
	ErrTimeout = errors.New("the provider did not answer in time")
	// ErrConnection: the request could not reach the provider.
	ErrConnection = errors.New("the provider could not be reached")
	// ErrBroken: the connection broke after the request may have reached
	// the provider, which may then run it.
	ErrBroken = errors.New("the connection to the provider broke")
	// ErrUnsupported: the provider cannot do this (embeddings on Anthropic).
	ErrUnsupported = errors.New("the provider does not support this")
	// ErrInvalidAnswer: the provider's answer could not be read.
	ErrInvalidAnswer = errors.New("the provider's answer is invalid")
	// ErrBadRequest: the request cannot be expressed for this provider.
	ErrBadRequest = errors.New("the request cannot be sent to this provider")
	// ErrCredentials: the provider's credentials could not be resolved (a
	// missing Secret or environment variable); corral's configuration is
	// at fault, not the provider.
	ErrCredentials = errors.New("the provider's credentials could not be resolved")
)

// Retryable reports whether another target may succeed where this one
// failed: a 429, a 5xx, a time-out or a connection error. Route fallbacks
// are taken on exactly these.
func Retryable(err error) bool {
	if errors.Is(err, ErrTimeout) || errors.Is(err, ErrConnection) || errors.Is(err, ErrBroken) {
		return true
	}
	var pe *ProviderError
	if errors.As(err, &pe) {
		return pe.Status == 429 || pe.Status >= 500
	}
	return false
}

// MayHaveRun reports whether a failed call may have been run (and billed)
// by its provider: the request may have left and no error answer came back.
// Requests refused before they left (bad request, credentials, no
// connection) and calls the provider answered with an HTTP error did not.
func MayHaveRun(err error) bool {
	if err == nil || errors.Is(err, ErrBadRequest) || errors.Is(err, ErrCredentials) ||
		errors.Is(err, ErrConnection) || errors.Is(err, ErrUnsupported) {
		return false
	}
	var pe *ProviderError
	return !errors.As(err, &pe) || pe.Status == 0
}
