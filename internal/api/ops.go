package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/killswitch"
	"github.com/corral-dev/corral/internal/problem"
)

// Killer turns kill switches on and off.
type Killer interface {
	Kill(ctx context.Context, t killswitch.Target, reason string) (killswitch.Switch, error)
	Unkill(ctx context.Context, t killswitch.Target) error
	List() []killswitch.Switch
}

// AuditReader reads the audit.
type AuditReader interface {
	Query(ctx context.Context, f audit.Filter) ([]audit.Record, error)
}

// WithOps gives the API the kill switches and the audit log, whose routes
// Register then adds. It returns a, for chaining after New.
func (a *API) WithOps(kills Killer, log AuditReader) *API {
	a.kills, a.audit = kills, log
	return a
}

// registerOps adds the kill switch and audit routes, when WithOps gave them.
func (a *API) registerOps(mux *http.ServeMux, admin, open func(problem.HandlerFunc) http.Handler) {
	allowed := map[string][]string{}
	if a.kills != nil {
		mux.Handle("GET /v1/killswitches", admin(a.listKills))
		mux.Handle("POST /v1/killswitches", admin(a.kill))
		mux.Handle("DELETE /v1/killswitches/all", admin(a.unkillAll))
		mux.Handle("DELETE /v1/killswitches/agent/{name}", admin(a.unkillAgent))
		allowed["/v1/killswitches"] = []string{"GET", "POST"}
		allowed["/v1/killswitches/all"] = []string{"DELETE"}
		allowed["/v1/killswitches/agent/{name}"] = []string{"DELETE"}
	}
	if a.audit != nil {
		mux.Handle("GET /v1/audit", admin(a.queryAudit))
		allowed["/v1/audit"] = []string{"GET"}
	}
	for path, methods := range allowed {
		mux.Handle(path, open(problem.NotAllowed(methods...)))
	}
}

// maxReason caps a kill switch's reason, in characters.
const maxReason = 1000

// KillRequest is the body of POST /v1/killswitches: {"all": true} or
// {"agent": "NAME"}, with an optional reason.
type KillRequest struct {
	All    bool   `json:"all,omitempty"`
	Agent  string `json:"agent,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// KillResponse answers POST /v1/killswitches: the switch now on, and a
// warning when it names an agent that does not exist (yet).
type KillResponse struct {
	killswitch.Switch
	Warning string `json:"warning,omitempty"`
}

// KillSwitchList answers GET /v1/killswitches: the global switch first,
// then agents' by name.
type KillSwitchList struct {
	Items []killswitch.Switch `json:"items"`
}

// Unkilled answers DELETE /v1/killswitches/...
type Unkilled struct {
	killswitch.Target
	Result string `json:"result"` // "unkilled"
}

func (a *API) listKills(w http.ResponseWriter, _ *http.Request) error {
	items := a.kills.List()
	if items == nil {
		items = []killswitch.Switch{}
	}
	return problem.WriteJSON(w, http.StatusOK, KillSwitchList{Items: items})
}

// kill turns a switch on. Killing an agent that is not (yet) declared is
// allowed, so that a name can be stopped before it is applied, but the
// answer says so: a typo would otherwise stop nobody, silently.
func (a *API) kill(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req KillRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, `the body must be JSON: {"all": true} or {"agent": "NAME", "reason": "..."}: `+err.Error(), err)
	}
	switch {
	case req.All == (req.Agent != ""):
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, `give exactly one of "all": true or "agent": "NAME"`)
	case req.Agent != "" && !config.ValidName(req.Agent):
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("agent: %q is not a valid name (lowercase letters, digits and '-', at most 63)", req.Agent))
	case utf8.RuneCountInString(req.Reason) > maxReason:
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("reason: at most %d characters", maxReason))
	}
	t := killswitch.Target{All: req.All, Agent: req.Agent}
	sw, err := a.kills.Kill(r.Context(), t, req.Reason)
	if err != nil {
		return killError(err)
	}
	resp := KillResponse{Switch: sw}
	if t.Agent != "" {
		if _, ok := a.store.Get("Agent", t.Agent); !ok {
			resp.Warning = fmt.Sprintf("Agent/%s does not exist (yet); the switch is on and stops it if it is created", t.Agent)
		}
	}
	return problem.WriteJSON(w, http.StatusOK, resp)
}

func (a *API) unkillAll(w http.ResponseWriter, r *http.Request) error {
	return a.unkill(w, r, killswitch.Target{All: true})
}

func (a *API) unkillAgent(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if !config.ValidName(name) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("%q is not a valid agent name (lowercase letters, digits and '-', at most 63)", name))
	}
	return a.unkill(w, r, killswitch.Target{Agent: name})
}

func (a *API) unkill(w http.ResponseWriter, r *http.Request, t killswitch.Target) error {
	if err := a.kills.Unkill(r.Context(), t); err != nil {
		return killError(err)
	}
	return problem.WriteJSON(w, http.StatusOK, Unkilled{Target: t, Result: "unkilled"})
}

func killError(err error) error {
	switch {
	case errors.Is(err, killswitch.ErrNotKilled):
		return problem.Wrap(http.StatusNotFound, problem.NotKilled, err.Error(), err)
	case errors.Is(err, killswitch.ErrInvalidTarget):
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, err.Error(), err)
	}
	return err
}

// AuditList answers GET /v1/audit: the newest matching records, oldest first.
type AuditList struct {
	Records []audit.Record `json:"records"`
}

// auditParams are the query parameters GET /v1/audit takes.
var auditParams = map[string]bool{"agent": true, "tool": true, "since": true, "limit": true}

// maxToolPattern caps the tool parameter; tool names are far shorter.
const maxToolPattern = 256

// queryAudit answers GET /v1/audit?agent=&tool=&since=&limit=. Unknown
// parameters are refused: a misspelt filter would otherwise widen the
// answer without a word.
func (a *API) queryAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	for name := range q {
		if !auditParams[name] {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("unknown parameter %q; the parameters are agent, tool, since and limit", name))
		}
	}
	var f audit.Filter
	if f.Agent = q.Get("agent"); f.Agent != "" && !config.ValidName(f.Agent) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("agent: %q is not a valid name", f.Agent))
	}
	if f.Tool = q.Get("tool"); len(f.Tool) > maxToolPattern {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("tool: at most %d characters", maxToolPattern))
	}
	if s := q.Get("since"); s != "" {
		since, err := ParseSince(s, time.Now())
		if err != nil {
			return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "since: "+err.Error(), err)
		}
		f.Since = since
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > audit.MaxLimit {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("limit: %q is not a number from 1 to %d", s, audit.MaxLimit))
		}
		f.Limit = n
	}
	records, err := a.audit.Query(r.Context(), f)
	if err != nil {
		return err
	}
	if records == nil {
		records = []audit.Record{}
	}
	return problem.WriteJSON(w, http.StatusOK, AuditList{Records: records})
}

// ParseSince reads a point in time given as an RFC 3339 time or as a
// duration before now: Go's syntax (90m, 1h30m) plus days (7d).
func ParseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := parseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q is neither a positive duration (30m, 1h, 7d) nor an RFC 3339 time (2026-01-02T15:04:05Z)", s)
	}
	return now.Add(-d), nil
}

// parseDuration is time.ParseDuration that also takes whole days, "7d".
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 100*365 {
			return 0, fmt.Errorf("bad number of days %q", days)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}
