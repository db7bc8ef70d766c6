package demo

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
)

type route struct {
	RouteID   string  `json:"route_id"`
	Via       string  `json:"via"`
	Mode      string  `json:"mode"`
	Carrier   string  `json:"carrier"`
	ExtraDays int     `json:"extra_days"`
	PriceEUR  float64 `json:"price_eur"`
}

// Carriers is the carrier marketplace: alternative routes for a held
// shipment, quotes, and an ETA service that has nothing new to say while
// the strike lasts (the loop the demo's chaser agent falls into).
type Carriers struct {
	mu     sync.Mutex
	quotes int
	etas   int
}

// NewCarriers returns the marketplace.
func NewCarriers() *Carriers { return &Carriers{} }

var routes = []route{
	{RouteID: "RT-ANR-RAIL", Via: "Antwerp", Mode: "rail", Carrier: "RailCo", ExtraDays: 1, PriceEUR: 190},
	{RouteID: "RT-HAM-SEA", Via: "Hamburg", Mode: "sea", Carrier: "NorthFreight", ExtraDays: 3, PriceEUR: 120},
}

// ETAs is how many times the ETA was asked for.
func (c *Carriers) ETAs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.etas
}

// ServeHTTP answers the operations of CarriersSpec.
func (c *Carriers) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, isShipment := strings.CutPrefix(r.URL.Path, "/shipments/")
	switch {
	case r.Method == http.MethodGet && isShipment && strings.HasSuffix(rest, "/alternatives"):
		if strings.TrimSuffix(rest, "/alternatives") != "SHP-17" {
			writeJSON(w, http.StatusOK, []route{})
			return
		}
		writeJSON(w, http.StatusOK, routes)
	case r.Method == http.MethodGet && isShipment && strings.HasSuffix(rest, "/eta"):
		c.mu.Lock()
		c.etas++
		c.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]string{"shipment_id": strings.TrimSuffix(rest, "/eta"), "eta": "unknown", "note": "the port is closed by a strike; no estimate until it reopens"})
	case r.Method == http.MethodPost && r.URL.Path == "/quotes":
		var req struct {
			RouteID string   `json:"route_id"`
			Orders  []string `json:"orders"`
		}
		if !readJSON(w, r, &req) {
			return
		}
		for _, rt := range routes {
			if rt.RouteID == req.RouteID {
				c.mu.Lock()
				c.quotes++
				c.mu.Unlock()
				// A quote's id is derived from what it quotes, so the same
				// question gets the same quote.
				writeJSON(w, http.StatusOK, map[string]any{"quote_id": fmt.Sprintf("Q-%s-%d", strings.TrimPrefix(rt.RouteID, "RT-"), len(req.Orders)),
					"route_id": rt.RouteID, "price_eur": rt.PriceEUR * float64(len(req.Orders)), "extra_days": rt.ExtraDays})
				return
			}
		}
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such route"})
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such operation"})
	}
}
