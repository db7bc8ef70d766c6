package demo

import (
	"fmt"
	"net/http"
	"sync"
)

// Invoice is one invoice billing issued.
type Invoice struct {
	InvoiceID   string  `json:"invoice_id"`
	CustomerID  string  `json:"customer_id"`
	OrderID     string  `json:"order_id"`
	Amount      float64 `json:"amount"`
	Currency    string  `json:"currency"`
	Description string  `json:"description,omitempty"`
}

// Billing issues invoices, once per Idempotency-Key.
type Billing struct {
	mu       sync.Mutex
	invoices []Invoice
	ledger   ledger
}

// NewBilling returns the billing system.
func NewBilling() *Billing { return &Billing{} }

// Invoices lists the invoices issued.
func (b *Billing) Invoices() []Invoice {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Invoice(nil), b.invoices...)
}

// Counts lists the requests and invoices per Idempotency-Key.
func (b *Billing) Counts() []Count { return b.ledger.counts() }

// ServeHTTP answers the operations of BillingSpec.
func (b *Billing) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/invoices" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such operation"})
		return
	}
	var req Invoice
	if !readJSON(w, r, &req) {
		return
	}
	b.ledger.do(w, r, func() (int, any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		req.InvoiceID = fmt.Sprintf("INV-%d", 5000+len(b.invoices)+1)
		b.invoices = append(b.invoices, req)
		return http.StatusCreated, req
	}, nil)
}
