package pipeline

import (
	"net/http"
	"time"

	"github.com/corral-dev/corral/internal/problem"
)

// substrateProblem is the answer when NATS JetStream did not answer in
// time: 503 substrate_unavailable with Retry-After, which a client retries,
// not internal, which it reports as a bug.
func substrateProblem(detail string, err error) *problem.Error {
	return &problem.Error{Status: http.StatusServiceUnavailable, Code: problem.SubstrateUnavailable, Detail: detail, RetryAfter: time.Second, Err: err}
}
