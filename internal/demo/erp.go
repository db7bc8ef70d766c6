package demo

import (
	"net/http"
	"slices"
	"strings"
	"sync"
)

type erpOrder struct {
	ID         string  `json:"id"`
	CustomerID string  `json:"customer_id"`
	Shipment   string  `json:"shipment"`
	Value      float64 `json:"value"`
	Currency   string  `json:"currency"`
	Status     string  `json:"status"`
	RouteID    string  `json:"route_id,omitempty"`
}

type customer struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
	Card  string `json:"card,omitempty"`
	IBAN  string `json:"iban,omitempty"`
}

// ERP is the system of record: orders and the customers who placed them,
// with the personal data a model provider must not see. Its one write,
// reroute_orders, honours Idempotency-Key.
type ERP struct {
	mu        sync.Mutex
	orders    []*erpOrder
	customers map[string]customer
	writes    ledger
	trace     string
}

// NewERP returns the ERP with its fixed data.
func NewERP() *ERP {
	return &ERP{
		orders: []*erpOrder{
			{ID: "ORD-1001", CustomerID: "C-1", Shipment: "SHP-17", Value: 1200, Currency: "EUR", Status: "shipped"},
			{ID: "ORD-1002", CustomerID: "C-2", Shipment: "SHP-17", Value: 860, Currency: "EUR", Status: "shipped"},
			{ID: "ORD-1003", CustomerID: "C-3", Shipment: "SHP-23", Value: 310, Currency: "EUR", Status: "open"},
		},
		customers: map[string]customer{
			"C-1": {ID: "C-1", Name: "Ana Lima", Email: "ana.lima@example.com", Card: "4111 1111 1111 1111"},
			"C-2": {ID: "C-2", Name: "Ben Okafor", Email: "ben.okafor@example.org", IBAN: "DE89 3704 0044 0532 0130 00"},
			"C-3": {ID: "C-3", Name: "Chloé Martin", Email: "chloe.martin@example.fr", Card: "5555 5555 5555 4444"},
		},
	}
}

// Writes counts the reroute requests per Idempotency-Key.
func (e *ERP) Writes() []Count { return e.writes.counts() }

// WriteTrace is the traceparent header of the last reroute request: the
// trace corral's call belongs to.
func (e *ERP) WriteTrace() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.trace
}

// Order returns an order's status and route.
func (e *ERP) Order(id string) (status, route string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, o := range e.orders {
		if o.ID == id {
			return o.Status, o.RouteID
		}
	}
	return "", ""
}

// ServeHTTP answers the operations of ERPSpec.
func (e *ERP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/orders":
		ship := r.URL.Query().Get("shipment")
		e.mu.Lock()
		out := []erpOrder{}
		for _, o := range e.orders {
			if ship == "" || o.Shipment == ship {
				out = append(out, *o)
			}
		}
		e.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/customers/"):
		e.mu.Lock()
		c, ok := e.customers[strings.TrimPrefix(r.URL.Path, "/customers/")]
		e.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such customer"})
			return
		}
		writeJSON(w, http.StatusOK, c)
	case r.Method == http.MethodPost && r.URL.Path == "/orders/reroute":
		var req struct {
			Orders  []string `json:"orders"`
			RouteID string   `json:"route_id"`
			QuoteID string   `json:"quote_id"`
		}
		if !readJSON(w, r, &req) {
			return
		}
		e.mu.Lock()
		e.trace = r.Header.Get("Traceparent")
		e.mu.Unlock()
		e.writes.do(w, r, func() (int, any) { return e.reroute(req.Orders, req.RouteID) }, nil)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such operation"})
	}
}

func (e *ERP) reroute(ids []string, route string) (int, any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []erpOrder
	for _, id := range ids {
		i := slices.IndexFunc(e.orders, func(o *erpOrder) bool { return o.ID == id })
		if i < 0 {
			return http.StatusNotFound, map[string]string{"error": "no such order: " + id}
		}
	}
	for _, id := range ids {
		i := slices.IndexFunc(e.orders, func(o *erpOrder) bool { return o.ID == id })
		e.orders[i].Status, e.orders[i].RouteID = "rerouted", route
		out = append(out, *e.orders[i])
	}
	return http.StatusOK, out
}
