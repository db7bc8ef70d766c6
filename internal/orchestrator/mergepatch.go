package orchestrator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// maxPatchDepth bounds the nesting of a document or patch MergePatch reads.
const maxPatchDepth = 64

// MergePatch applies a JSON merge patch (RFC 7386) to doc: an object patch
// sets its members, null members delete theirs, objects merge recursively,
// and any other patch replaces the document. An empty doc is null. It
// returns the new document, compact.
func MergePatch(doc, patch []byte) ([]byte, error) {
	var p any
	if err := decodeOne(patch, &p); err != nil {
		return nil, fmt.Errorf("the patch is not JSON: %w", err)
	}
	var d any
	if len(bytes.TrimSpace(doc)) > 0 {
		if err := decodeOne(doc, &d); err != nil {
			return nil, fmt.Errorf("the document is not JSON: %w", err)
		}
	}
	if depth(p, 0) > maxPatchDepth || depth(d, 0) > maxPatchDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxPatchDepth)
	}
	return json.Marshal(merge(d, p))
}

// decodeOne reads exactly one JSON value, numbers kept as written.
func decodeOne(b []byte, v *any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}

func merge(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = merge(t[k], v)
	}
	return t
}

func depth(v any, d int) int {
	if d > maxPatchDepth {
		return d
	}
	out := d
	switch v := v.(type) {
	case map[string]any:
		for _, x := range v {
			out = max(out, depth(x, d+1))
		}
	case []any:
		for _, x := range v {
			out = max(out, depth(x, d+1))
		}
	}
	return out
}
