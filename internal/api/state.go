package api

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"

	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/problem"
)

// The shared state of a task tree (docs/agents.md): GET answers the JSON
// document with its version as ETag; PATCH applies a JSON merge patch
// (RFC 7386) and must say which version it changes with If-Match (428
// without, 412 when the state has moved on; If-Match: * changes any).

func (a *API) getState(w http.ResponseWriter, r *http.Request) error {
	_, t, err := a.treeTask(r)
	if err != nil {
		return err
	}
	st, err := a.tasks.State(r.Context(), t.ID)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(st.Version))
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(st.Document)
	return err
}

func (a *API) patchState(w http.ResponseWriter, r *http.Request) error {
	ac, t, err := a.treeTask(r)
	if err != nil {
		return err
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/merge-patch+json") && !strings.HasPrefix(ct, "application/json") {
		return problem.New(http.StatusUnsupportedMediaType, problem.UnsupportedMedia, "send the change as a JSON merge patch: Content-Type: application/merge-patch+json")
	}
	expect, err := ifMatch(r.Header.Values("If-Match"))
	if err != nil {
		return err
	}
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 || bytes.TrimSpace(body)[0] != '{' {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, `the body must be a JSON merge patch object, such as {"supplier": {"eta": "friday"}}`)
	}
	st, err := a.tasks.PatchState(r.Context(), t.ID, body, expect, ac.by(), "")
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(st.Version))
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(st.Document)
	return err
}

func etag(version uint64) string { return `"` + strconv.FormatUint(version, 10) + `"` }

// ifMatch reads the version a change expects: one If-Match with one ETag
// ("7", or W/"7"), or * for any.
func ifMatch(values []string) (int64, error) {
	if len(values) == 0 {
		return 0, problem.New(http.StatusPreconditionRequired, problem.StateVersionRequired, `send If-Match with the ETag GET /v1/tasks/{id}/state gave (such as "7"), or If-Match: * to change it whatever its version`)
	}
	v := strings.TrimSpace(strings.Join(values, ","))
	if v == "*" {
		return orchestrator.AnyVersion, nil
	}
	v = strings.TrimPrefix(v, "W/")
	n, err := strconv.ParseInt(strings.Trim(v, `"`), 10, 64)
	if err != nil || n < 0 || !strings.HasPrefix(v, `"`) || !strings.HasSuffix(v, `"`) || len(v) < 3 {
		return 0, problem.New(http.StatusBadRequest, problem.InvalidRequest, `If-Match: one ETag as GET /v1/tasks/{id}/state gave it (such as "7"), or *`)
	}
	return n, nil
}
