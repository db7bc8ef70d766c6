package a2a

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/problem"
)

// PushOptions configure push notifications.
type PushOptions struct {
	// AllowPrivate lets webhooks reach private, loopback and link-local
	// addresses (corral up --a2a-push-allow-private): for a mesh whose
	// receivers are all inside. Off, such targets are refused.
	AllowPrivate bool
	// Attempts bounds the tries of one delivery (default 4); Backoff is
	// the first wait between them, doubled each time (default 1s).
	Attempts int
	Backoff  time.Duration
	// Resolver looks webhook hosts up when a config is made (default
	// net.DefaultResolver).
	Resolver Resolver
}

// Pusher posts a task's updates to its push notification configs. It
// follows each task that has configs from the last update it delivered,
// on one goroutine per task, all owned by Run.
type Pusher struct {
	logger *slog.Logger
	tasks  Tasks
	store  *Store
	client *http.Client
	opts   PushOptions

	mu      sync.Mutex
	ctx     context.Context // Run's, while it runs
	running map[string]bool
	wg      sync.WaitGroup
}

// NewPusher returns a pusher; Run delivers.
func NewPusher(logger *slog.Logger, tasks Tasks, store *Store, opts PushOptions) *Pusher {
	if opts.Attempts <= 0 {
		opts.Attempts = 4
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	return &Pusher{logger: logger, tasks: tasks, store: store, client: pushClient(opts.AllowPrivate), opts: opts, running: map[string]bool{}}
}

// Run resumes the tasks with configs and delivers until ctx ends, then
// waits for its goroutines.
func (p *Pusher) Run(ctx context.Context) error {
	p.mu.Lock()
	p.ctx = ctx
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.ctx = nil
		p.mu.Unlock()
		p.wg.Wait()
	}()
	keys, err := p.store.keys(ctx)
	if err != nil && ctx.Err() == nil {
		p.logger.WarnContext(ctx, "push notifications: listing tasks to resume", "err", err)
	}
	for _, k := range keys {
		p.watch(k)
	}
	<-ctx.Done()
	return nil
}

// watch follows a task, unless it is followed already.
func (p *Pusher) watch(task string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx == nil || p.running[task] {
		return
	}
	p.running[task] = true
	ctx := p.ctx
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() {
			p.mu.Lock()
			delete(p.running, task)
			p.mu.Unlock()
		}()
		if err := p.follow(ctx, task); err != nil && ctx.Err() == nil {
			p.logger.WarnContext(ctx, "push notifications of a task stopped", "task", task, "err", err)
		}
	}()
}

var errNoConfigs = errors.New("no push configs")

// follow delivers a task's updates after the last one delivered until the
// task ends or has no configs left.
func (p *Pusher) follow(ctx context.Context, task string) error {
	rec, _, err := p.store.get(ctx, task)
	if err != nil {
		return err
	}
	if len(rec.Push) == 0 || rec.Finished {
		return nil
	}
	err = p.tasks.Events(ctx, task, rec.Delivered, true, func(ev orchestrator.Event) error {
		if ev.Type != orchestrator.EvState {
			return nil
		}
		rec, _, err := p.store.get(ctx, task)
		if err != nil {
			return err
		}
		if len(rec.Push) == 0 {
			return errNoConfigs
		}
		body, err := p.payload(ctx, task, ev)
		if err != nil {
			return err
		}
		for _, pc := range rec.Push {
			p.deliver(ctx, pc, body)
		}
		_, err = p.store.update(ctx, task, func(r *record) error {
			r.Delivered = max(r.Delivered, ev.Seq)
			r.Finished = r.Finished || ev.State.Final()
			return nil
		})
		return err
	})
	if errors.Is(err, errNoConfigs) {
		return nil
	}
	return err
}

// payload is one update as a StreamResponse: the whole task at its end,
// else a status update.
func (p *Pusher) payload(ctx context.Context, id string, ev orchestrator.Event) ([]byte, error) {
	t, err := p.tasks.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	ctxID := id
	if r, _, err := p.store.get(ctx, id); err == nil && r.ContextID != "" {
		ctxID = r.ContextID
	}
	at := *atEvent(t, ev)
	var v StreamResponse
	if ev.State.Final() {
		task := Task{ID: id, ContextID: ctxID, Status: status(&at, ctxID), Artifacts: resultArtifact(&at), Metadata: taskMetadata(&at)}
		v.Task = &task
	} else {
		v.StatusUpdate = &TaskStatusUpdateEvent{TaskID: id, ContextID: ctxID, Status: status(&at, ctxID), Metadata: taskMetadata(&at)}
	}
	return json.Marshal(v)
}

// deliver posts one update to one webhook, retrying a failure a bounded
// number of times with back-off. A refused address is not retried.
func (p *Pusher) deliver(ctx context.Context, pc TaskPushNotificationConfig, body []byte) {
	wait := p.opts.Backoff
	for attempt := 1; ; attempt++ {
		err := p.post(ctx, pc, body)
		if err == nil {
			return
		}
		if errors.Is(err, ErrForbiddenAddress) || attempt >= p.opts.Attempts || ctx.Err() != nil {
			p.logger.WarnContext(ctx, "push notification not delivered", "task", pc.TaskID, "config", pc.ID, "attempts", attempt, "err", err)
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait *= 2
	}
}

func (p *Pusher) post(ctx context.Context, pc TaskPushNotificationConfig, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, pc.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/a2a+json")
	req.Header.Set("A2A-Version", Version)
	if a := pc.Authentication; a != nil && a.Credentials != "" {
		req.Header.Set("Authorization", a.Scheme+" "+a.Credentials)
	}
	if pc.Token != "" {
		req.Header.Set("X-A2A-Notification-Token", pc.Token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// The push notification config methods.

func (s *Server) pushEnabled() error {
	if s.push == nil {
		return rpcErr(codePushNotSupported, "push_not_supported", "push notifications are off on this corral")
	}
	return nil
}

func (s *Server) createPush(ctx context.Context, c *call, params json.RawMessage) (any, error) {
	var p TaskPushNotificationConfig
	if e := decodeParams(params, &p); e != nil {
		return nil, e
	}
	return s.addPush(ctx, c, p)
}

// addPush stores a webhook of a task, checked, and follows the task.
func (s *Server) addPush(ctx context.Context, c *call, p TaskPushNotificationConfig) (*TaskPushNotificationConfig, error) {
	if err := s.pushEnabled(); err != nil {
		return nil, err
	}
	t, err := s.task(ctx, c, p.TaskID)
	if err != nil {
		return nil, err
	}
	if err := checkWebhook(ctx, p.URL, s.push.opts.AllowPrivate, s.push.opts.Resolver); err != nil {
		return nil, rpcErr(codeInvalidParams, problem.InvalidRequest, "params."+err.Error())
	}
	if len(p.Token) > 1024 || len(p.ID) > 100 {
		return nil, invalidParams("params: token at most 1024 characters, id at most 100")
	}
	if a := p.Authentication; a != nil && (a.Scheme == "" || len(a.Scheme) > 40 || len(a.Credentials) > 4096 || !printable(a.Scheme+a.Credentials)) {
		return nil, invalidParams("params.authentication: a scheme (Bearer, Basic) and credentials, printable, at most 4096 characters")
	}
	if p.ID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		p.ID = hex.EncodeToString(b[:])
	}
	p.TaskID, p.Tenant = t.ID, ""
	_, err = s.store.update(ctx, t.ID, func(r *record) error {
		r.Push = slices.DeleteFunc(r.Push, func(x TaskPushNotificationConfig) bool { return x.ID == p.ID })
		if len(r.Push) >= maxPushConfigs {
			return invalidParams("params: a task has at most %d push notification configs", maxPushConfigs)
		}
		r.Push = append(r.Push, p)
		return nil
	})
	if err != nil {
		var re *rpcError
		if errors.As(err, &re) {
			return nil, re
		}
		return nil, substrate(err)
	}
	s.push.watch(t.ID)
	return &p, nil
}

func printable(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// shown is a config as it is read back: its credentials are not.
func shown(p TaskPushNotificationConfig) TaskPushNotificationConfig {
	if p.Authentication != nil {
		p.Authentication = &AuthenticationInfo{Scheme: p.Authentication.Scheme}
	}
	if p.Token != "" {
		p.Token = "********"
	}
	return p
}

func (s *Server) pushConfigs(ctx context.Context, c *call, params json.RawMessage) (*PushConfigRequest, []TaskPushNotificationConfig, error) {
	if err := s.pushEnabled(); err != nil {
		return nil, nil, err
	}
	var p PushConfigRequest
	if e := decodeParams(params, &p); e != nil {
		return nil, nil, e
	}
	if p.TaskID == "" {
		return nil, nil, invalidParams("params.taskId: required")
	}
	t, err := s.task(ctx, c, p.TaskID)
	if err != nil {
		return nil, nil, err
	}
	r, _, err := s.store.get(ctx, t.ID)
	if err != nil {
		return nil, nil, substrate(err)
	}
	return &p, r.Push, nil
}

func (s *Server) getPush(ctx context.Context, c *call, params json.RawMessage) (any, error) {
	p, all, err := s.pushConfigs(ctx, c, params)
	if err != nil {
		return nil, err
	}
	for _, pc := range all {
		if pc.ID == p.ID {
			return shown(pc), nil
		}
	}
	return nil, rpcErr(codeTaskNotFound, problem.NotFound, "task "+p.TaskID+" has no push notification config "+truncate(p.ID, 80))
}

func (s *Server) listPush(ctx context.Context, c *call, params json.RawMessage) (any, error) {
	_, all, err := s.pushConfigs(ctx, c, params)
	if err != nil {
		return nil, err
	}
	out := ListPushConfigsResponse{Configs: []TaskPushNotificationConfig{}}
	for _, pc := range all {
		out.Configs = append(out.Configs, shown(pc))
	}
	return out, nil
}

// deletePush removes a config; deleting one that is gone is not an error.
func (s *Server) deletePush(ctx context.Context, c *call, params json.RawMessage) (any, error) {
	p, _, err := s.pushConfigs(ctx, c, params)
	if err != nil {
		return nil, err
	}
	if _, err := s.store.update(ctx, p.TaskID, func(r *record) error {
		r.Push = slices.DeleteFunc(r.Push, func(x TaskPushNotificationConfig) bool { return x.ID == p.ID })
		return nil
	}); err != nil {
		return nil, substrate(err)
	}
	return struct{}{}, nil
}
