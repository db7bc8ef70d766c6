package redact

import (
	"strings"
	"unicode/utf8"
)

// identifierBefore reports whether the number at s[i] follows a sign or a
// word that makes it an identifier rather than personal data: '#', "No.",
// or a word such as "order", "invoice", "tracking" in one of the default
// regions' languages ("order 4155550132", "Rechnung 0301 234567").
func identifierBefore(s string, i int) bool {
	if i > 0 && s[i-1] == '#' {
		return true
	}
	w, j := precedingWord(s, i)
	if numberWords[w] {
		w, _ = precedingWord(s, j) // "tracking number 0313 5822 5307"
	}
	return identifierWords[w] || identifierWords[strings.TrimSuffix(w, ".")]
}

// maxLookback bounds how far identifierBefore looks back, so that a long
// run of spaces or letters before many numbers costs nothing quadratic.
const maxLookback = 32

// precedingWord returns the word (letters, dots, non-ASCII) before s[i], past
// spaces and colons, lower-cased, and where it starts; "" if there is none
// within maxLookback bytes.
func precedingWord(s string, i int) (string, int) {
	floor := max(i-maxLookback, 0)
	for i > floor && (s[i-1] == ' ' || s[i-1] == ':') {
		i--
	}
	j := i
	for j > floor && (isAlpha(s[j-1]) || s[j-1] == '.' || s[j-1] >= utf8.RuneSelf) {
		j--
	}
	if j == floor && floor > 0 {
		return "", j // cut: longer than any identifier word
	}
	return strings.ToLower(s[j:i]), j
}

// numberWords say "number": the word before them decides.
var numberWords = map[string]bool{"number": true, "nummer": true, "número": true, "numéro": true, "numero": true, "nummer:": true}

// identifierWords name identifiers that are written as digits. Numbers
// after them are not phones, and nine plain digits after them are not an
// SSN.
var identifierWords = map[string]bool{
	"order": true, "invoice": true, "ref": true, "reference": true, "ticket": true, "tracking": true,
	"shipment": true, "parcel": true, "po": true, "sku": true, "id": true, "no.": true, "nr.": true,
	"receipt": true, "case": true, "transaction": true, "txn": true, "build": true, "version": true,
	"zip": true, "postcode": true, "serial": true, "customer": true,
	"rechnung": true, "bestellung": true, "auftrag": true, "kundennummer": true, "sendung": true,
	"commande": true, "facture": true, "référence": true, "pedido": true, "factura": true,
	"referencia": true, "ordine": true, "fattura": true, "riferimento": true, "bestelling": true,
	"factuur": true, "klantnummer": true, "faktura": true, "ordernummer": true, "fatura": true,
	"boleto": true, "注文番号": true, "請求書": true,
}
