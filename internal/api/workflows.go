package api

import (
	"fmt"
	"net/http"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/problem"
)

// workflowRequest checks the workflow of a POST /v1/tasks body: a run is
// started by the admin, or by the agent the workflow acts as; the agent
// field, if any, must be that agent (the task service checks it).
func workflowRequest(req *TaskRequest) error {
	if req.Workflow == "" {
		return nil
	}
	if !config.ValidName(req.Workflow) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("workflow: %q is not a valid name (lowercase letters, digits and '-', at most 63)", truncate(req.Workflow, 80)))
	}
	return nil
}
