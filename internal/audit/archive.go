package audit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// maxLine bounds a line of an archive. A record is at most what JetStream
// takes in one message (1 MiB by default, 64 MiB at most, and corral's are
// far smaller); a longer line is not a record.
const maxLine = 64 << 20

// VerifyArchive checks an archive that Export wrote, one stored record per
// line, without the server: each record's prev against the digest of the
// line before, the sequences for gaps, and the records that checkpoints
// (from ExportCheckpoints, read with ReadCheckpoints; none is fine) cover.
// Blank lines are skipped and a line's final \r is dropped. A broken chain
// is a Report with OK false; the error is for failing to read r.
func VerifyArchive(r io.Reader, checkpoints []Checkpoint, progress func(Progress)) (Report, error) {
	w := newWalker(false, progress)
	for _, cp := range checkpoints {
		w.addCheckpoint(cp)
	}
	err := readLines(r, maxLine, func(n int, line []byte, tooLong bool) {
		w.line = n
		if tooLong {
			w.restart()
			w.report.Records++
			w.problem(Problem{Line: n, What: fmt.Sprintf("unreadable: longer than %d MiB, not an audit record", maxLine>>20)})
			return
		}
		h, err := parseHead(line)
		seq := h.Seq // 0 when unreadable
		if p := w.prev; seq != 0 && p != nil && p.chained {
			switch {
			case seq <= p.seq:
				w.restart()
				w.problem(Problem{Seq: seq, Line: n, What: fmt.Sprintf("out of order: seq %d comes after seq %d", seq, p.seq)})
			case seq > p.seq+1:
				w.missing(p.seq+1, seq-1)
			}
		}
		w.add(item{seq: seq, line: n, data: line, head: &h, headErr: err})
	})
	if err != nil {
		return Report{}, fmt.Errorf("audit: verify archive: %w", err)
	}
	if w.report.Records == 0 {
		w.note("the archive holds no records")
	}
	return w.finish(), nil
}

// ReadCheckpoints reads checkpoints that ExportCheckpoints wrote, one per
// line; blank lines are skipped.
func ReadCheckpoints(r io.Reader) ([]Checkpoint, error) {
	var (
		out  []Checkpoint
		errs []error
	)
	err := readLines(r, maxLine, func(n int, line []byte, tooLong bool) {
		if tooLong {
			errs = append(errs, fmt.Errorf("line %d: longer than %d MiB, not a checkpoint", n, maxLine>>20))
			return
		}
		cp, err := parseCheckpoint(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n, err))
			return
		}
		out = append(out, cp)
	})
	if err != nil {
		return nil, fmt.Errorf("audit: read checkpoints: %w", err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("audit: read checkpoints: %w", errors.Join(errs...))
	}
	return out, nil
}

// readLines calls fn with each non-blank line of r and its number (from 1),
// without the line end. A line longer than limit is skipped, and fn told so,
// rather than held in memory.
func readLines(r io.Reader, limit int, fn func(n int, line []byte, tooLong bool)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		buf     []byte
		tooLong bool
	)
	for n := 1; ; {
		chunk, err := br.ReadSlice('\n')
		if !tooLong && len(buf)+len(chunk) > limit+2 { // the line end may follow
			tooLong, buf = true, buf[:0]
		}
		if !tooLong {
			buf = append(buf, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // the rest of the line comes next
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		line := bytes.TrimSuffix(bytes.TrimSuffix(buf, []byte("\n")), []byte("\r"))
		if len(line) > limit {
			tooLong, line = true, nil
		}
		if tooLong || len(bytes.TrimSpace(line)) > 0 {
			fn(n, line, tooLong)
		}
		if err != nil { // io.EOF
			return nil
		}
		n++
		buf, tooLong = buf[:0], false
	}
}
