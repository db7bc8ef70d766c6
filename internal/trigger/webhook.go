package trigger

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/problem"
)

// HookResponse is the body of a webhook request that was taken: the
// event's id and what became of it (started, duplicate, dead_lettered),
// with its task.
type HookResponse struct {
	Event   string `json:"event"`
	Outcome string `json:"outcome"`
	Task    string `json:"task,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// retryBusy is how long a sender is asked to wait while the trigger is at
// its maxConcurrent, or the substrate does not answer.
const retryBusy = 5 * time.Second

// ServeHook is POST /hooks/{trigger}: it checks the request's signature
// before it reads anything else of it, then starts the event's task and
// answers 202 once the task is stored. An unsigned, badly signed, stale,
// oversized or malformed request is refused and counted, and starts
// nothing. A retry of a request that was taken answers 202 again with the
// same task (outcome duplicate).
func (m *Manager) ServeHook(w http.ResponseWriter, req *http.Request) error {
	name := req.PathValue("trigger")
	r, ok := m.lookup(name)
	if !ok || r.kind != "webhook" {
		// No count: an unknown name is no trigger's event (and labels
		// from callers would be unbounded).
		return problem.New(http.StatusNotFound, problem.TriggerNotFound, "no webhook trigger named "+truncate(name, 64))
	}
	m.count(name, Received)
	res, err := m.hook(w, req, r)
	if err != nil {
		var p *problem.Error
		if errors.As(err, &p) && (p.Code == problem.TriggerBusy || p.Status >= 500) {
			return err
		}
		m.count(name, Refused)
		m.logger.DebugContext(req.Context(), "webhook refused", "trigger", name, "err", err)
		return err
	}
	w.Header().Set("Location", "/v1/tasks/"+res.Task)
	if res.Task == "" {
		w.Header().Del("Location")
	}
	return problem.WriteJSON(w, http.StatusAccepted, res)
}

func (m *Manager) hook(w http.ResponseWriter, req *http.Request, r *runner) (HookResponse, error) {
	spec := r.spec.Webhook
	mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil || !(isJSON(mt)) {
		return HookResponse{}, problem.New(http.StatusUnsupportedMediaType, problem.UnsupportedMedia, "Content-Type: send application/json (or application/cloudevents+json)")
	}
	limit := spec.MaxBodyOrDefault()
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, int64(limit)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return HookResponse{}, problem.New(http.StatusRequestEntityTooLarge, problem.RequestTooLarge, fmt.Sprintf("body over the trigger's limit of %d bytes", limit))
		}
		return HookResponse{}, problem.New(http.StatusBadRequest, problem.InvalidRequest, "body: could not be read")
	}
	secret, err := m.deps.Secret(req.Context(), spec.Secret)
	if err != nil || secret == "" {
		// The trigger cannot check anything: refuse, never start unchecked.
		m.logger.ErrorContext(req.Context(), "webhook trigger's secret unavailable; refusing its requests", "trigger", r.name, "err", err)
		return HookResponse{}, problem.Wrap(http.StatusServiceUnavailable, problem.SubstrateUnavailable, "the trigger's secret is not available; retry later", err)
	}
	signedAt, err := verify(spec, req.Header, body, []byte(secret), m.now())
	if err != nil {
		return HookResponse{}, err
	}
	if !utf8.Valid(body) || !json.Valid(body) {
		return HookResponse{}, problem.New(http.StatusBadRequest, problem.InvalidRequest, "body: not JSON in UTF-8")
	}
	ev, err := normalise(hookEvent(r.name, spec, req.Header, body, mt, signedAt))
	if err != nil {
		return HookResponse{}, problem.New(http.StatusBadRequest, problem.InvalidRequest, "body: "+err.Error())
	}
	res, err := m.deliver(req.Context(), r, ev, false)
	switch {
	case errors.Is(err, errBusy):
		return HookResponse{}, &problem.Error{Status: http.StatusTooManyRequests, Code: problem.TriggerBusy, RetryAfter: retryBusy,
			Detail: fmt.Sprintf("trigger %s has %d tasks running, its maxConcurrent; send the event again later", r.name, r.spec.MaxConcurrent)}
	case err != nil:
		if statusOf(err) < 500 {
			err = problem.Wrap(http.StatusServiceUnavailable, problem.SubstrateUnavailable, "the event's task could not be stored; retry", err)
		}
		var p *problem.Error
		if errors.As(err, &p) && p.RetryAfter == 0 {
			p.RetryAfter = retryBusy
		}
		return HookResponse{}, err
	}
	return HookResponse{Event: ev.ID(), Outcome: res.Outcome, Task: res.Task, Reason: res.Reason}, nil
}

// verify checks a request's signature under its trigger's scheme and,
// where the scheme signs a time, that the time is within the window. It
// returns the signed time (zero when the scheme signs none).
func verify(spec *config.WebhookSource, h http.Header, body, secret []byte, now time.Time) (time.Time, error) {
	window := spec.WindowOrDefault()
	var (
		header  string
		sigs    [][]byte
		ts      int64
		content [][]byte
		err     error
	)
	switch spec.Signature {
	case config.SignatureGitHub:
		header = "X-Hub-Signature-256"
	case config.SignatureStripe:
		header = "Stripe-Signature"
	default:
		header = spec.Header
	}
	value := h.Get(header)
	if value == "" {
		return time.Time{}, problem.New(http.StatusUnauthorized, problem.SignatureMissing, "no "+header+" header: the request must be signed")
	}
	malformed := func(err error) error {
		return problem.New(http.StatusForbidden, problem.SignatureInvalid, header+": malformed: "+err.Error())
	}
	switch spec.Signature {
	case config.SignatureGitHub:
		mac, perr := ParseGitHub(value)
		if perr != nil {
			return time.Time{}, malformed(perr)
		}
		sigs, content = [][]byte{mac}, [][]byte{body}
	case config.SignatureStripe:
		if ts, sigs, err = ParseStripe(value); err != nil {
			return time.Time{}, malformed(err)
		}
		content = [][]byte{[]byte(strconv.FormatInt(ts, 10)), []byte("."), body}
	default:
		if sigs, err = ParseHMAC(value); err != nil {
			return time.Time{}, malformed(err)
		}
		content = [][]byte{body}
		if spec.TimestampHeader != "" {
			raw := h.Get(spec.TimestampHeader)
			if raw == "" {
				return time.Time{}, problem.New(http.StatusUnauthorized, problem.SignatureMissing, "no "+spec.TimestampHeader+" header: the request must carry the time it was signed")
			}
			if ts, err = strconv.ParseInt(raw, 10, 64); err != nil || ts <= 0 {
				return time.Time{}, problem.New(http.StatusForbidden, problem.SignatureInvalid, spec.TimestampHeader+": not a Unix time in seconds")
			}
			content = [][]byte{[]byte(raw), []byte("."), body}
		}
	}
	// The signature first: a stale timestamp is only news if it is signed.
	if !anyEqual(sign(secret, content...), sigs) {
		return time.Time{}, problem.New(http.StatusForbidden, problem.SignatureInvalid, header+": the signature does not match the body under the trigger's secret")
	}
	if ts == 0 {
		return time.Time{}, nil
	}
	at := time.Unix(ts, 0)
	if age := now.Sub(at); age > window || age < -window {
		return time.Time{}, problem.New(http.StatusForbidden, problem.SignatureExpired,
			fmt.Sprintf("signed at %s, outside the trigger's window of %s: a replay, or a clock far off", at.UTC().Format(time.RFC3339), window))
	}
	return at, nil
}

// hookEvent describes a verified webhook request. Its id comes from what
// was signed (Stripe's event id, else a hash of the signed content), so
// a captured request replayed with other headers is the same event; only
// a configured idHeader overrides it. Of the CloudEvents headers only the
// chain extensions are read: a sender cannot rename its event.
func hookEvent(name string, spec *config.WebhookSource, h http.Header, body []byte, mt string, signedAt time.Time) raw {
	ev := raw{Source: "/hooks/" + name, Type: cmpOr(spec.Type, "dev.corral.webhook"), Time: signedAt, ContentType: mt, Data: body,
		Header: func(k string) string {
			if strings.EqualFold(k, "ce-"+ExtChain) || strings.EqualFold(k, "ce-"+ExtParent) {
				return h.Get(k)
			}
			return ""
		}}
	switch spec.Signature {
	case config.SignatureGitHub:
		if e := h.Get("X-GitHub-Event"); e != "" && spec.Type == "" && config.ValidName(strings.ReplaceAll(e, "_", "-")) {
			ev.Type = "com.github." + e
		}
	case config.SignatureStripe:
		var s struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		}
		if json.Unmarshal(body, &s) == nil {
			ev.ID = truncate(s.ID, 256)
			if s.Type != "" && spec.Type == "" {
				ev.Type = "com.stripe." + truncate(s.Type, 200)
			}
		}
	}
	if spec.IDHeader != "" {
		ev.ID = truncate(h.Get(spec.IDHeader), 256)
	}
	if ev.ID == "" {
		sum := sha256.New()
		if !signedAt.IsZero() {
			sum.Write([]byte(strconv.FormatInt(signedAt.Unix(), 10) + "."))
		}
		sum.Write(body)
		ev.ID = "sha256:" + hex.EncodeToString(sum.Sum(nil))
	}
	if signedAt.IsZero() {
		ev.Time = time.Now()
	}
	return ev
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return strings.ToValidUTF8(s, "")
}
