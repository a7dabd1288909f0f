package engine

import (
	"archive/tar"
	"context"
	"io"

	"github.com/mlc-lab/mlc/errs"
)

// copyLayer writes an arbitrary layer tar as a wire stream, entry by entry
// (cleanHeader's headers): how the tests make streams the walk of a real
// upper directory would not.
func copyLayer(ctx context.Context, layer io.Reader, w io.Writer, progress func(int64)) (Exported, error) {
	tr := tar.NewReader(layer)
	l := newLayerOut(w, progress)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return l.end()
		}
		if err != nil {
			return l.out, errs.Wrap(errs.Internal, err, "reading the changes")
		}
		if ctx.Err() != nil {
			return l.out, errs.New(errs.Interrupted, "interrupted")
		}
		if nh := cleanHeader(h); nh != nil {
			if err := l.entry(nh, tr); err != nil {
				return l.out, err
			}
		}
	}
}

// CopyLayerForTest is copyLayer, for the integration tests.
func CopyLayerForTest(layer io.Reader, w io.Writer) (Exported, error) {
	return copyLayer(context.Background(), layer, w, nil)
}
