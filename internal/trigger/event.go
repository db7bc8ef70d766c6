package trigger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// The CloudEvents extension attributes with which corral carries, on the
// events it publishes, the chain of the agent whose action caused them: a
// task started by such an event inherits the chain, so depth cannot be
// laundered through a bus or a webhook.
const (
	// ExtChain is the agents of the chain, outermost first, comma-separated.
	ExtChain = "corralchain"
	// ExtParent is the id of the task whose action published the event.
	ExtParent = "corralparent"
)


// Stamp sets the chain extensions on an event corral publishes on behalf
// of a task: its agents (chain, the task's own agent last) and the task.
func Stamp(ev *event.Event, chain []string, task string) {
	if len(chain) > 0 {
		ev.SetExtension(ExtChain, strings.Join(chain, ","))
	}
	if task != "" {
		ev.SetExtension(ExtParent, task)
	}
}

// chainOf reads the chain extensions of an event.
func chainOf(ev *event.Event) (chain []string, parent string, err error) {
	ext := ev.Extensions()
	if v, ok := ext[ExtChain]; ok {
		s, _ := v.(string)
		for _, a := range strings.Split(s, ",") {
			if !config.ValidName(a) {
				return nil, "", fmt.Errorf("extension %s: %q is not an agent name", ExtChain, a)
			}
			chain = append(chain, a)
		}
	}
	if v, ok := ext[ExtParent]; ok {
		parent, _ = v.(string)
		if !orchestrator.ValidID(parent) {
			return nil, "", fmt.Errorf("extension %s: not a task id", ExtParent)
		}
	}
	return chain, parent, nil
}

// raw is what a source received, before it is a CloudEvent.
type raw struct {
	// ID is the source's id for the event; "" asks for one derived from
	// the content.
	ID     string
	Source string
	Type   string
	Time   time.Time
	// Header reads the message's headers or properties, for binary-mode
	// CloudEvents (ce-id, ce-type, ...); nil when there are none.
	Header func(name string) string
	// ContentType is the message's content type, if it says one.
	ContentType string
	Data        []byte
}

// normalise makes the CloudEvent an event becomes: a structured CloudEvent
// (application/cloudevents+json) or binary-mode headers are taken as they
// are; otherwise the source's id, source, type and time, with the data as
// JSON when it is JSON, as text when it is UTF-8, else base64.
func normalise(r raw) (*event.Event, error) {
	mt, _, _ := mime.ParseMediaType(r.ContentType)
	if mt == "application/cloudevents+json" {
		ev := event.New()
		if err := json.Unmarshal(r.Data, &ev); err != nil {
			return nil, fmt.Errorf("structured CloudEvent: %w", err)
		}
		if err := ev.Validate(); err != nil {
			return nil, fmt.Errorf("structured CloudEvent: %w", err)
		}
		return &ev, nil
	}
	ev := event.New()
	ev.SetID(r.ID)
	ev.SetSource(r.Source)
	ev.SetType(r.Type)
	if !r.Time.IsZero() {
		ev.SetTime(r.Time.UTC())
	}
	if r.Header != nil {
		if id := r.Header("ce-id"); id != "" {
			ev.SetID(id)
			if s := r.Header("ce-source"); s != "" {
				ev.SetSource(s)
			}
			if t := r.Header("ce-type"); t != "" {
				ev.SetType(t)
			}
			if t, err := time.Parse(time.RFC3339Nano, r.Header("ce-time")); err == nil {
				ev.SetTime(t.UTC())
			}
			if s := r.Header("ce-subject"); s != "" {
				ev.SetSubject(s)
			}
		}
		for _, ext := range []string{ExtChain, ExtParent} {
			if v := r.Header("ce-" + ext); v != "" {
				ev.SetExtension(ext, v)
			}
		}
	}
	if ev.ID() == "" {
		sum := sha256.Sum256(r.Data)
		ev.SetID("sha256:" + hex.EncodeToString(sum[:]))
	}
	switch {
	case len(r.Data) == 0:
	case json.Valid(r.Data) && (mt == "" || isJSON(mt)):
		ev.SetDataContentType("application/json")
		ev.DataEncoded = compactJSON(r.Data)
	case utf8.Valid(r.Data) && !strings.HasPrefix(mt, "application/octet-stream"):
		if err := ev.SetData(cmpOr(mt, "text/plain"), string(r.Data)); err != nil {
			return nil, err
		}
	default:
		if err := ev.SetData(cmpOr(mt, "application/octet-stream"), r.Data); err != nil {
			return nil, err
		}
	}
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	return &ev, nil
}

func isJSON(mt string) bool {
	return mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "text/json"
}

func compactJSON(b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return b
	}
	return out.Bytes()
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
