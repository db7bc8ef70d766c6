package demo

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// System is one of the world's APIs as corral imports it: the ToolSource
// name, its OpenAPI document, and the path it is served under.
type System struct {
	Name string
	Spec []byte
	Path string
}

// Systems are the world's APIs, in the order the story meets them.
var Systems = []System{
	{"logistics", LogisticsSpec, "/logistics"},
	{"erp", ERPSpec, "/erp"},
	{"carriers", CarriersSpec, "/carriers"},
	{"notifications", NotificationsSpec, "/notifications-api"},
	{"billing", BillingSpec, "/billing"},
}

// World is the demo world running on loopback: every system and the model
// server behind one listener.
type World struct {
	URL           string // http://127.0.0.1:PORT
	Logistics     *Logistics
	ERP           *ERP
	Carriers      *Carriers
	Notifications *Notifications
	Billing       *Billing
	Models        *Models

	srv  *http.Server
	done chan struct{}
}

// Start serves a fresh world whose models play scripts, until Close.
func Start(scripts map[string][]Turn) (*World, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	w := &World{
		URL: "http://" + ln.Addr().String(), Logistics: NewLogistics(), ERP: NewERP(), Carriers: NewCarriers(),
		Notifications: NewNotifications(), Billing: NewBilling(), Models: NewModels(scripts), done: make(chan struct{}),
	}
	mux := http.NewServeMux()
	for _, s := range Systems {
		mux.Handle(s.Path+"/", http.StripPrefix(s.Path, w.handler(s.Name)))
	}
	mux.Handle("/v1/", w.Models)
	w.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(w.done)
		if err := w.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return
		}
	}()
	return w, nil
}

// BaseURL is where system name is served.
func (w *World) BaseURL(name string) string {
	for _, s := range Systems {
		if s.Name == name {
			return w.URL + s.Path
		}
	}
	return ""
}

// ModelsURL is the model server's OpenAI-compatible base URL.
func (w *World) ModelsURL() string { return w.URL + "/v1" }

func (w *World) handler(name string) http.Handler {
	switch name {
	case "logistics":
		return w.Logistics
	case "erp":
		return w.ERP
	case "carriers":
		return w.Carriers
	case "notifications":
		return w.Notifications
	default:
		return w.Billing
	}
}

// Close stops serving; a held notification is released first.
func (w *World) Close() {
	w.Notifications.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := w.srv.Shutdown(ctx); err != nil {
		w.srv.Close()
	}
	<-w.done
}
