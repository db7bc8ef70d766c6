package audit

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

// exportAll runs Export and returns the records as an archive.
func exportAll(t testing.TB, l *Log, rg Range) ([]byte, []uint64) {
	t.Helper()
	var buf bytes.Buffer
	var seqs []uint64
	err := l.Export(t.Context(), rg, func(seq uint64, data []byte) error {
		seqs = append(seqs, seq)
		buf.Write(data)
		buf.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatalf("Export(%+v): %v", rg, err)
	}
	return buf.Bytes(), seqs
}

func TestExport(t *testing.T) {
	l := open(t, bustest.Open(t))
	if got, _ := exportAll(t, l, Range{}); len(got) != 0 {
		t.Errorf("Export of an empty audit = %q, want nothing", got)
	}
	appendAll(t, l, call("impact", "a.b"), call("impact", "c.d"))
	middle := time.Now()
	appendAll(t, l, call("impact", "e.f"))
	end := time.Now()
	appendAll(t, l, call("impact", "g.h"))

	tests := []struct {
		rg   Range
		want []uint64
	}{
		{Range{}, []uint64{1, 2, 3, 4}},
		{Range{Since: middle}, []uint64{3, 4}},
		{Range{Until: middle}, []uint64{1, 2}},
		{Range{Since: middle, Until: end}, []uint64{3}},
		{Range{Since: time.Now().Add(time.Hour)}, nil},
	}
	for _, tt := range tests {
		_, seqs := exportAll(t, l, tt.rg)
		if diff := cmp.Diff(tt.want, seqs); diff != "" {
			t.Errorf("Export(%+v) seqs (-want +got):\n%s", tt.rg, diff)
		}
	}

	// The archive is the records as stored: it verifies offline, and a
	// change to it shows.
	archive, _ := exportAll(t, l, Range{})
	for seq := uint64(1); seq <= 4; seq++ {
		if line := bytes.Split(archive, []byte("\n"))[seq-1]; !bytes.Equal(line, storedAt(t, l, seq)) {
			t.Errorf("exported line %d = %s, want the stored record %s", seq, line, storedAt(t, l, seq))
		}
	}
	if rep, err := VerifyArchive(bytes.NewReader(archive), nil, nil); err != nil || !rep.OK || rep.Records != 4 {
		t.Errorf("VerifyArchive(export) = %+v, %v; want OK over 4", rep, err)
	}
	altered := bytes.Replace(archive, []byte(`"c.d"`), []byte(`"x.y"`), 1)
	if rep, err := VerifyArchive(bytes.NewReader(altered), nil, nil); err != nil || rep.OK || rep.Problems[0].Seq != 2 {
		t.Errorf("VerifyArchive(altered export) = %+v, %v; want seq 2 named", rep, err)
	}

	// fn's error ends the export.
	stop := errors.New("disk full")
	n := 0
	err := l.Export(t.Context(), Range{}, func(uint64, []byte) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("Export with a failing writer = %v after %d records, want disk full after 1", err, n)
	}
	info, err := l.stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Errorf("consumers left after exports = %d, want 0", info.State.Consumers)
	}
}

func TestExportCheckpoints(t *testing.T) {
	l := open(t, bustest.Open(t))
	for i := range 3 {
		appendAll(t, l, call("impact", fmt.Sprintf("t.op%d", i)))
		if _, _, err := l.checkpoint(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	err := l.ExportCheckpoints(t.Context(), Range{}, func(_ uint64, data []byte) error {
		buf.Write(data)
		buf.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cps, err := ReadCheckpoints(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, cp := range cps {
		seqs = append(seqs, cp.Seq)
	}
	if diff := cmp.Diff([]uint64{1, 2, 3}, seqs); diff != "" {
		t.Errorf("exported checkpoints (-want +got):\n%s", diff)
	}
	archive, _ := exportAll(t, l, Range{})
	if rep, err := VerifyArchive(bytes.NewReader(archive), cps, nil); err != nil || !rep.OK || rep.Checkpoints != 3 {
		t.Errorf("VerifyArchive with the checkpoints = %+v, %v; want OK with 3 matched", rep, err)
	}
}
