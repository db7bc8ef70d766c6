package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
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
	Kill(ctx context.Context, t killswitch.Target, reason, by string) (killswitch.Switch, error)
	Unkill(ctx context.Context, t killswitch.Target, reason, by string) error
	List() []killswitch.Switch
}

// AuditReader reads the audit: queries it, verifies its chain and exports
// it as stored.
type AuditReader interface {
	Query(ctx context.Context, f audit.Filter) ([]audit.Record, error)
	Verify(ctx context.Context, since time.Time, progress func(audit.Progress)) (audit.Report, error)
	Export(ctx context.Context, rg audit.Range, fn func(seq uint64, data []byte) error) error
	ExportCheckpoints(ctx context.Context, rg audit.Range, fn func(seq uint64, data []byte) error) error
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
		mux.Handle("GET /v1/audit/verify", admin(a.verifyAudit))
		mux.Handle("GET /v1/audit/export", admin(a.exportAudit))
		mux.Handle("GET /v1/audit/checkpoints", admin(a.exportCheckpoints))
		for _, path := range []string{"/v1/audit", "/v1/audit/verify", "/v1/audit/export", "/v1/audit/checkpoints"} {
			allowed[path] = []string{"GET"}
		}
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

// UnkillRequest is the optional body of DELETE /v1/killswitches/...: why
// the switch goes off, for the audit.
type UnkillRequest struct {
	Reason string `json:"reason,omitempty"`
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
	sw, err := a.kills.Kill(r.Context(), t, req.Reason, a.adminName(r))
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
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req UnkillRequest
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, `the body, when there is one, must be JSON: {"reason": "..."}: `+err.Error(), err)
		}
	}
	if utf8.RuneCountInString(req.Reason) > maxReason {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("reason: at most %d characters", maxReason))
	}
	if err := a.kills.Unkill(r.Context(), t, req.Reason, a.adminName(r)); err != nil {
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

// maxToolPattern caps the tool parameter; tool names are far shorter.
const maxToolPattern = 256

// queryAudit answers GET /v1/audit?agent=&tool=&since=&limit=. Unknown
// parameters are refused: a misspelt filter would otherwise widen the
// answer without a word.
func (a *API) queryAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if err := checkParams(q, "agent", "tool", "since", "limit"); err != nil {
		return err
	}
	var f audit.Filter
	if f.Agent = q.Get("agent"); f.Agent != "" && !config.ValidName(f.Agent) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("agent: %q is not a valid name", f.Agent))
	}
	if f.Tool = q.Get("tool"); len(f.Tool) > maxToolPattern {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("tool: at most %d characters", maxToolPattern))
	}
	var err error
	if f.Since, err = timeParam(q, "since", time.Now()); err != nil {
		return err
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

// ParseSince reads a point in time given as an RFC 3339 time, as a date
// (midnight UTC: record times are UTC) or as a duration before now: Go's
// syntax (90m, 1h30m) plus days (7d).
func ParseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	d, err := parseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q is neither a positive duration (30m, 1h, 7d), a date (2026-01-02, midnight UTC) nor an RFC 3339 time (2026-01-02T15:04:05Z)", s)
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

// checkParams refuses query parameters other than the allowed ones: a
// misspelt one would otherwise be ignored without a word.
func checkParams(q url.Values, allowed ...string) error {
	for name := range q {
		if !slices.Contains(allowed, name) {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest,
				fmt.Sprintf("unknown parameter %q; the parameters are %s", name, strings.Join(allowed, ", ")))
		}
	}
	return nil
}

// timeParam reads the query parameter name as ParseSince does; zero when
// it is absent.
func timeParam(q url.Values, name string, now time.Time) (time.Time, error) {
	s := q.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := ParseSince(s, now)
	if err != nil {
		return time.Time{}, problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, name+": "+err.Error(), err)
	}
	return t, nil
}

// verifyAudit answers GET /v1/audit/verify?since=: the audit chain walked
// from the oldest record kept (or since), as an audit.Report. A broken
// chain is an answer, 200 with "ok": false, not an error.
func (a *API) verifyAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if err := checkParams(q, "since"); err != nil {
		return err
	}
	since, err := timeParam(q, "since", time.Now())
	if err != nil {
		return err
	}
	rep, err := a.audit.Verify(r.Context(), since, nil)
	if err != nil {
		return err
	}
	if !rep.OK && len(rep.Problems) > 0 {
		a.logger.WarnContext(r.Context(), "audit chain broken", "problems", len(rep.Problems)+rep.MoreProblems,
			"first", rep.Problems[0].String())
	}
	return problem.WriteJSON(w, http.StatusOK, rep)
}

// exportAudit answers GET /v1/audit/export?since=&until=: every record
// stored in that period, one per line exactly as stored, so that the
// archive can be verified offline.
func (a *API) exportAudit(w http.ResponseWriter, r *http.Request) error {
	return a.export(w, r, a.audit.Export)
}

// exportCheckpoints answers GET /v1/audit/checkpoints?since=&until=: the
// checkpoints stored in that period, one per line, to keep off the host.
func (a *API) exportCheckpoints(w http.ResponseWriter, r *http.Request) error {
	return a.export(w, r, a.audit.ExportCheckpoints)
}

// Export streaming: the answer is flushed every exportFlushRecords lines,
// or when exportFlushInterval has passed, so that a slow walk still shows.
const (
	exportFlushRecords  = 1000
	exportFlushInterval = time.Second
)

// export streams what export yields as application/x-ndjson, flushing as it
// goes, so memory stays bounded however long the period. An error before
// the first line is a problem answer; after it, the answer is cut short
// (the client sees an incomplete transfer, not a clean end).
func (a *API) export(w http.ResponseWriter, r *http.Request, export func(context.Context, audit.Range, func(uint64, []byte) error) error) error {
	q := r.URL.Query()
	if err := checkParams(q, "since", "until"); err != nil {
		return err
	}
	now := time.Now()
	var (
		rg  audit.Range
		err error
	)
	if rg.Since, err = timeParam(q, "since", now); err != nil {
		return err
	}
	if rg.Until, err = timeParam(q, "until", now); err != nil {
		return err
	}
	if !rg.Since.IsZero() && !rg.Until.IsZero() && rg.Until.Before(rg.Since) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "until: before since")
	}

	rc := http.NewResponseController(w)
	started := false
	start := func() {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		started = true
	}
	lines, lastFlush := 0, now
	err = export(r.Context(), rg, func(_ uint64, data []byte) error {
		if !started {
			start()
			// The status goes at once: the client knows the export began.
			if err := rc.Flush(); err != nil {
				return err
			}
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		if _, err := w.Write([]byte{'\n'}); err != nil {
			return err
		}
		lines++
		if lines%exportFlushRecords == 0 || time.Since(lastFlush) >= exportFlushInterval {
			lastFlush = time.Now()
			return rc.Flush()
		}
		return nil
	})
	switch {
	case err != nil && !started:
		return err
	case err != nil:
		level := slog.LevelWarn
		if r.Context().Err() != nil {
			level = slog.LevelDebug // the client went away
		}
		a.logger.Log(r.Context(), level, "audit export cut short", "path", r.URL.Path, "lines", lines, "err", err)
		// The status is sent; aborting is how the client learns that the
		// archive is incomplete.
		panic(http.ErrAbortHandler)
	case !started:
		start()
	}
	return nil
}
