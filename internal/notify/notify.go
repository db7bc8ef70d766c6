// Package notify announces new approvals where people are: a Slack
// incoming webhook with Approve and Deny buttons (whose presses come back,
// signed by Slack, to the interactivity endpoint and count as the decision
// of the corral human the Slack user is mapped to), or any HTTP endpoint
// that takes CloudEvents JSON. Notifier resources say where.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/problem"
)

// Resources lists Notifier resources (registry.Registry).
type Resources interface {
	List(kind string) []config.Resource
}

// Resolve reads a credential (secret.Resolver.Resolve).
type Resolve func(ctx context.Context, ref config.SecretValue) (string, error)

// Humans maps Slack users to corral humans (identity.Store).
type Humans interface {
	HumanBySlack(user string) (identity.Human, bool)
}

// Decider records decisions (approval.Store).
type Decider interface {
	Decide(ctx context.Context, id string, p approval.Person, v approval.Verdict, comment, via string) (approval.Approval, error)
}

// The action ids of the buttons.
const (
	ActionApprove = "corral_approve"
	ActionDeny    = "corral_deny"
)

// Limits.
const (
	maxInFlight    = 32
	postTimeout    = 10 * time.Second
	maxInteraction = 64 << 10
)

// Notifier posts announcements and takes Slack's button presses.
type Notifier struct {
	logger  *slog.Logger
	res     Resources
	resolve Resolve
	humans  Humans
	decider Decider
	client  *http.Client

	wg    sync.WaitGroup
	slots chan struct{}
}

// New returns a notifier; client nil is a client with a 10 s timeout.
func New(logger *slog.Logger, res Resources, resolve Resolve, humans Humans, decider Decider, client *http.Client) *Notifier {
	if client == nil {
		client = &http.Client{Timeout: postTimeout}
	}
	return &Notifier{logger: logger, res: res, resolve: resolve, humans: humans, decider: decider, client: client, slots: make(chan struct{}, maxInFlight)}
}

// Announce posts a to every Notifier resource, in the background: the call
// that was parked is answered without waiting for Slack. Close waits for
// the posts under way.
func (n *Notifier) Announce(ctx context.Context, a approval.Approval) {
	notifiers := n.res.List("Notifier")
	if len(notifiers) == 0 {
		return
	}
	select {
	case n.slots <- struct{}{}:
	default:
		n.logger.ErrorContext(ctx, "too many announcements under way; this approval is not announced", "approval", a.ID)
		return
	}
	n.wg.Go(func() {
		defer func() { <-n.slots }()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), postTimeout)
		defer cancel()
		for _, res := range notifiers {
			if err := n.post(ctx, res, a); err != nil {
				n.logger.WarnContext(ctx, "announcing an approval failed", "notifier", res.Metadata.Name, "approval", a.ID, "err", err)
			}
		}
	})
}

// Close waits for the announcements under way.
func (n *Notifier) Close() { n.wg.Wait() }

func (n *Notifier) post(ctx context.Context, res config.Resource, a approval.Approval) error {
	var spec config.NotifierSpec
	if err := json.Unmarshal(res.Spec, &spec); err != nil {
		return fmt.Errorf("notifier %s: %w", res.Metadata.Name, err)
	}
	switch {
	case spec.Slack != nil:
		u, err := n.resolve(ctx, spec.Slack.WebhookURL)
		if err != nil {
			return fmt.Errorf("webhookURL: %w", err)
		}
		return slack.PostWebhookCustomHTTPContext(ctx, u, n.client, SlackMessage(a))
	case spec.Webhook != nil:
		u, err := n.resolve(ctx, spec.Webhook.URL)
		if err != nil {
			return fmt.Errorf("url: %w", err)
		}
		return n.postEvent(ctx, u, a)
	}
	return nil
}

// SlackMessage is the announcement of a: what is asked, why, by whom, and
// the two buttons, whose value is the approval's id.
func SlackMessage(a approval.Approval) *slack.WebhookMessage {
	var b strings.Builder
	fmt.Fprintf(&b, "*Approval needed*: agent `%s` wants to call `%s`", a.Action.Agent, a.Action.Target)
	if a.Action.Principal != "" {
		fmt.Fprintf(&b, " for %s", a.Action.Principal)
	}
	fmt.Fprintf(&b, "\n*Why*: %s", strings.Join(a.Reasons, "; "))
	args := string(a.Action.Arguments)
	if len(args) > 2000 {
		args = args[:2000] + "..."
	}
	fmt.Fprintf(&b, "\n*Arguments*:\n```%s```", strings.ReplaceAll(args, "```", "'''"))
	who := "any approver"
	if len(a.Approvers) > 0 {
		who = strings.Join(a.Approvers, ", ")
	}
	fmt.Fprintf(&b, "\n*Needs*: %d of %s, before %s (approval `%s`)", a.Quorum, who, a.Expires.UTC().Format(time.RFC3339), a.ID)
	text := b.String()
	approve := slack.NewButtonBlockElement(ActionApprove, a.ID, slack.NewTextBlockObject(slack.PlainTextType, "Approve", false, false))
	approve.Style = slack.StylePrimary
	deny := slack.NewButtonBlockElement(ActionDeny, a.ID, slack.NewTextBlockObject(slack.PlainTextType, "Deny", false, false))
	deny.Style = slack.StyleDanger
	return &slack.WebhookMessage{
		Text: fmt.Sprintf("Approval needed: %s wants %s", a.Action.Agent, a.Action.Target),
		Blocks: &slack.Blocks{BlockSet: []slack.Block{
			slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, text, false, false), nil, nil),
			slack.NewActionBlock("corral_approval", approve, deny),
		}},
	}
}

// Event is the CloudEvent (structured mode) a webhook notifier posts.
type Event struct {
	SpecVersion     string            `json:"specversion"`
	Type            string            `json:"type"`
	Source          string            `json:"source"`
	ID              string            `json:"id"`
	Time            time.Time         `json:"time"`
	Subject         string            `json:"subject"`
	DataContentType string            `json:"datacontenttype"`
	Data            approval.Approval `json:"data"`
}

// EventType is the type of the CloudEvent of a new approval.
const EventType = "dev.corral.approval.requested"

func (n *Notifier) postEvent(ctx context.Context, u string, a approval.Approval) error {
	body, err := json.Marshal(Event{SpecVersion: "1.0", Type: EventType, Source: "corral", ID: a.ID, Time: a.Created,
		Subject: a.Action.Target, DataContentType: "application/json", Data: a})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/cloudevents+json")
	resp, err := n.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("webhook answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// Register adds the Slack interactivity endpoint to mux.
func (n *Notifier) Register(mux *http.ServeMux, handle func(problem.HandlerFunc) http.Handler) {
	mux.Handle("POST /v1/slack/interactivity", handle(n.interactivity))
	mux.Handle("/v1/slack/interactivity", handle(problem.NotAllowed("POST")))
}

// Press is one button press, as read from Slack's interactivity payload.
type Press struct {
	User       string
	ApprovalID string
	Verdict    approval.Verdict
}

// errNoPress is a payload that holds no press of corral's buttons.
var errNoPress = errors.New("no press of an Approve or Deny button")

// ParsePress reads a block_actions interactivity request body
// (application/x-www-form-urlencoded, its payload field JSON).
func ParsePress(body []byte) (Press, error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return Press{}, fmt.Errorf("the body is not a form: %w", err)
	}
	var cb slack.InteractionCallback
	if err := json.Unmarshal([]byte(form.Get("payload")), &cb); err != nil {
		return Press{}, fmt.Errorf("payload: %w", err)
	}
	if cb.Type != slack.InteractionTypeBlockActions {
		return Press{}, errNoPress
	}
	for _, act := range cb.ActionCallback.BlockActions {
		if act == nil {
			continue
		}
		p := Press{User: cb.User.ID, ApprovalID: act.Value}
		switch act.ActionID {
		case ActionApprove:
			p.Verdict = approval.Approve
		case ActionDeny:
			p.Verdict = approval.Deny
		default:
			continue
		}
		if p.User == "" || !approval.ValidID(p.ApprovalID) {
			return Press{}, errNoPress
		}
		return p, nil
	}
	return Press{}, errNoPress
}

// SlackAnswer is the body of the answer to a verified press.
type SlackAnswer struct {
	ResponseType string `json:"response_type"`
	Text         string `json:"text"`
}

// interactivity takes a button press: a request signed with a Slack
// Notifier's signing secret within Slack's five-minute window, by a Slack
// user a corral human has declared, counts as that human's decision.
func (n *Notifier) interactivity(w http.ResponseWriter, r *http.Request) error {
	body, err := readAll(w, r)
	if err != nil {
		return err
	}
	if !n.verified(r, body) {
		return problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the request does not carry a valid, fresh Slack signature of a Notifier's signing secret")
	}
	p, err := ParsePress(body)
	if err != nil {
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "not a press of corral's Approve or Deny button", err)
	}
	h, ok := n.humans.HumanBySlack(p.User)
	if !ok {
		n.logger.WarnContext(r.Context(), "a Slack user no corral human declared pressed an approval button", "slack_user", p.User, "approval", p.ApprovalID)
		return problem.WriteJSON(w, http.StatusOK, SlackAnswer{ResponseType: "ephemeral",
			Text: "Your Slack user " + p.User + " is not a corral human, so your decision does not count: ask an admin for corral humans create NAME --slack-user " + p.User})
	}
	a, err := n.decider.Decide(r.Context(), p.ApprovalID, approval.Human(h.Name, h.Groups), p.Verdict, "", "slack")
	if err != nil {
		return problem.WriteJSON(w, http.StatusOK, SlackAnswer{ResponseType: "ephemeral", Text: "Not recorded: " + err.Error()})
	}
	return problem.WriteJSON(w, http.StatusOK, SlackAnswer{ResponseType: "in_channel",
		Text: fmt.Sprintf("%s: %s by %s; approval %s is %s", a.Action.Target, p.Verdict, h.Name, a.ID, a.State)})
}

// verified reports whether the request is signed with the signing secret
// of one of the Slack Notifiers, with a timestamp within five minutes.
func (n *Notifier) verified(r *http.Request, body []byte) bool {
	for _, res := range n.res.List("Notifier") {
		var spec config.NotifierSpec
		if json.Unmarshal(res.Spec, &spec) != nil || spec.Slack == nil {
			continue
		}
		secret, err := n.resolve(r.Context(), spec.Slack.SigningSecret)
		if err != nil || secret == "" {
			continue
		}
		sv, err := slack.NewSecretsVerifier(r.Header, secret)
		if err != nil {
			continue // no signature, or stale: no other secret makes it fresh
		}
		if _, err := sv.Write(body); err == nil && sv.Ensure() == nil {
			return true
		}
	}
	return false
}

func readAll(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxInteraction))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, problem.New(http.StatusRequestEntityTooLarge, problem.RequestTooLarge, fmt.Sprintf("the body exceeds %d bytes", maxInteraction))
	}
	if err != nil {
		return nil, problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "could not read the body", err)
	}
	return buf.Bytes(), nil
}
