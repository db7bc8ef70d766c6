// Package demo is corral's demo world: a logistics company's systems, each
// a small HTTP API with an OpenAPI document, served on loopback for
// `corral demo` and for tests, and a scripted OpenAI-compatible model
// server. The systems that write (the ERP, notifications, billing) honour
// Idempotency-Key and count what they did, so the demo can show from the
// far side that nothing happened twice.
package demo

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// The OpenAPI documents of the systems.
var (
	//go:embed logistics.yaml
	LogisticsSpec []byte
	//go:embed erp.yaml
	ERPSpec []byte
	//go:embed carriers.yaml
	CarriersSpec []byte
	//go:embed notifications.yaml
	NotificationsSpec []byte
	//go:embed billing.yaml
	BillingSpec []byte
)

type shipment struct {
	ID         string   `json:"id"`
	Carrier    string   `json:"carrier"`
	Port       string   `json:"port"`
	DelayHours int      `json:"delay_hours"`
	Reason     string   `json:"reason,omitempty"`
	Orders     []string `json:"orders"`
}

type order struct {
	ID       string `json:"id"`
	Customer string `json:"customer"`
	Status   string `json:"status"`
}

// Logistics is the shipping system: delayed shipments and the orders on
// them. Cancelled orders stay cancelled for the life of the handler.
type Logistics struct {
	mu        sync.Mutex
	shipments []shipment
	orders    map[string]*order
}

// NewLogistics returns the system with its fixed data: a strike at
// Rotterdam holds shipment SHP-17.
func NewLogistics() *Logistics {
	return &Logistics{
		shipments: []shipment{
			{ID: "SHP-17", Carrier: "NorthFreight", Port: "Rotterdam", DelayHours: 72, Reason: "dock workers' strike", Orders: []string{"ORD-1001", "ORD-1002"}},
			{ID: "SHP-23", Carrier: "Coastline", Port: "Antwerp", DelayHours: 4, Orders: []string{"ORD-1003"}},
		},
		orders: map[string]*order{
			"ORD-1001": {ID: "ORD-1001", Customer: "ana.lima@example.com", Status: "shipped"},
			"ORD-1002": {ID: "ORD-1002", Customer: "ben.okafor@example.org", Status: "shipped"},
			"ORD-1003": {ID: "ORD-1003", Customer: "chloe.martin@example.fr", Status: "open"},
		},
	}
}

// ServeHTTP answers the operations of LogisticsSpec.
func (l *Logistics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id, isOrder := strings.CutPrefix(r.URL.Path, "/orders/")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/shipments/delayed":
		min, _ := strconv.Atoi(r.URL.Query().Get("min_hours"))
		out := []shipment{}
		for _, s := range l.shipments {
			if s.DelayHours >= min {
				out = append(out, s)
			}
		}
		writeJSON(w, http.StatusOK, out)
	case r.Method == http.MethodGet && isOrder:
		o, ok := l.orders[id]
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such order"})
			return
		}
		writeJSON(w, http.StatusOK, o)
	case r.Method == http.MethodDelete && isOrder:
		o, ok := l.orders[id]
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such order"})
			return
		}
		o.Status = "cancelled"
		w.WriteHeader(http.StatusNoContent)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such operation"})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// readJSON decodes a request body of at most 64 KiB into v.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad body: " + err.Error()})
		return false
	}
	return true
}
