// Package demo is corral's demo world: mock enterprise systems with OpenAPI
// documents, served on loopback for `corral demo` and for tests, so that the
// gateway can be shown against something that behaves like a real API.
package demo

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
)

// LogisticsSpec is the OpenAPI document of the logistics system.
//
//go:embed logistics.yaml
var LogisticsSpec []byte

type shipment struct {
	ID         string   `json:"id"`
	Carrier    string   `json:"carrier"`
	DelayHours int      `json:"delay_hours"`
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

// NewLogistics returns the system with its fixed data.
func NewLogistics() *Logistics {
	return &Logistics{
		shipments: []shipment{
			{ID: "SHP-17", Carrier: "NorthFreight", DelayHours: 30, Orders: []string{"ORD-1001", "ORD-1002"}},
			{ID: "SHP-23", Carrier: "Coastline", DelayHours: 4, Orders: []string{"ORD-1003"}},
		},
		orders: map[string]*order{
			"ORD-1001": {ID: "ORD-1001", Customer: "ana@example.com", Status: "shipped"},
			"ORD-1002": {ID: "ORD-1002", Customer: "ben@example.com", Status: "shipped"},
			"ORD-1003": {ID: "ORD-1003", Customer: "chloe@example.com", Status: "open"},
		},
	}
}

// ServeHTTP answers the operations of LogisticsSpec.
func (l *Logistics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
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
	case r.Method == http.MethodGet && len(r.URL.Path) > len("/orders/"):
		o, ok := l.orders[r.URL.Path[len("/orders/"):]]
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such order"})
			return
		}
		writeJSON(w, http.StatusOK, o)
	case r.Method == http.MethodDelete && len(r.URL.Path) > len("/orders/"):
		o, ok := l.orders[r.URL.Path[len("/orders/"):]]
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
