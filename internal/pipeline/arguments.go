package pipeline

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/corral-dev/corral/internal/problem"
)

// maxArgumentDepth bounds how deeply arguments nest: policy, validation and
// the audit all walk them.
const maxArgumentDepth = 100

// checkValue refuses arguments that policy could not read: nesting deeper
// than maxArgumentDepth, and numbers outside float64's range (1e400), which
// would otherwise fail policy evaluation as a policy_error.
func checkValue(v any, depth int) error {
	if depth > maxArgumentDepth {
		return problem.New(http.StatusUnprocessableEntity, problem.InvalidArguments, fmt.Sprintf("the arguments nest deeper than %d levels", maxArgumentDepth))
	}
	switch v := v.(type) {
	case json.Number:
		if f, err := strconv.ParseFloat(string(v), 64); err != nil || math.IsInf(f, 0) {
			return problem.New(http.StatusUnprocessableEntity, problem.InvalidArguments, "the arguments hold a number out of range: "+truncate(string(v), 32))
		}
	case map[string]any:
		for _, x := range v {
			if err := checkValue(x, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for _, x := range v {
			if err := checkValue(x, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}
