package app

import (
	"context"

	"github.com/corral-dev/corral/internal/tools/mcpsource"
	"github.com/corral-dev/corral/internal/tools/restsource"
)

// mcpPins keeps MCP sources' pinned tool lists in the OpenAPI documents'
// object store, one object per ToolSource either way (each kind starts
// afresh when the pin is another server's).
type mcpPins struct{ store *restsource.ObjectPins }

var _ mcpsource.Pins = mcpPins{}

func (p mcpPins) Get(ctx context.Context, source string) (mcpsource.Pin, bool, error) {
	pin, ok, err := p.store.Get(ctx, source)
	return mcpsource.Pin{Doc: pin.Doc, Revision: pin.Revision, From: pin.From}, ok, err
}

func (p mcpPins) Put(ctx context.Context, source string, pin mcpsource.Pin) error {
	return p.store.Put(ctx, source, restsource.Pin{Doc: pin.Doc, Revision: pin.Revision, From: pin.From})
}
