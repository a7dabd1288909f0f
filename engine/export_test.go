package engine

import (
	"context"
	"io"
)

// CopyLayerForTest is copyLayer, for the integration tests.
func CopyLayerForTest(layer io.Reader, w io.Writer) (Exported, error) {
	return copyLayer(context.Background(), layer, w, nil)
}
