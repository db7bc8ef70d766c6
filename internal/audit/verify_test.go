package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testChain is n records stored as Append stores them, from seq 1: record
// seq i has ID "id<i>" and target "crm.op<i>".
func testChain(t testing.TB, n int) [][]byte {
	t.Helper()
	var out [][]byte
	prev := ""
	for i := 1; i <= n; i++ {
		r := call("impact", fmt.Sprintf("crm.op%d", i))
		r.ID, r.Time = fmt.Sprintf("id%d", i), time.Date(2026, 1, 2, 3, 4, i, 0, time.UTC)
		body, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		data := chained(body, uint64(i), prev)
		prev = digest(data)
		out = append(out, data)
	}
	return out
}

// rechain rewrites records from index from on so that each prev names the
// digest of the record before it: a forger's consistent chain.
func rechain(t testing.TB, records [][]byte, from int) {
	t.Helper()
	for i := max(from, 1); i < len(records); i++ {
		var r Record
		if err := json.Unmarshal(records[i], &r); err != nil {
			t.Fatal(err)
		}
		r.Prev = digest(records[i-1])
		data, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		records[i] = data
	}
}

func checkpointOf(records [][]byte, seq uint64) Checkpoint {
	return Checkpoint{Seq: seq, Digest: digest(records[seq-1]), Time: time.Date(2026, 1, 2, 4, 0, 0, 0, time.UTC)}
}

func archive(lines [][]byte) []byte {
	return append(bytes.Join(lines, []byte("\n")), '\n')
}

// problems lists a report's problems as "place: what", for comparisons.
func problems(rep Report) []string {
	out := []string{}
	for _, p := range rep.Problems {
		out = append(out, p.place()+": "+p.What)
	}
	return out
}

func TestVerifyArchive(t *testing.T) {
	alter := func(records [][]byte, seq int, old, new string) {
		records[seq-1] = bytes.Replace(records[seq-1], []byte(old), []byte(new), 1)
	}
	tests := []struct {
		name        string
		edit        func(records [][]byte) [][]byte
		checkpoints func(original [][]byte) []Checkpoint
		ok          bool
		problems    []string
		checked     int // checkpoints that matched
	}{
		{
			name: "intact",
			ok:   true,
		},
		{
			name: "record changed",
			edit: func(rs [][]byte) [][]byte { alter(rs, 3, `"crm.op3"`, `"crm.opX"`); return rs },
			problems: []string{
				"seq 3 at line 3: changed after it was written: its digest does not match the prev stored in seq 4 at line 4",
			},
		},
		{
			name: "record's prev changed",
			edit: func(rs [][]byte) [][]byte {
				alter(rs, 3, digest(rs[1]), digest([]byte("forged")))
				return rs
			},
			problems: []string{
				"seq 3 at line 3: changed after it was written: its prev does not match the digest of seq 2 at line 2, and its digest does not match the prev stored in seq 4 at line 4",
			},
		},
		{
			name:     "record removed",
			edit:     func(rs [][]byte) [][]byte { return append(rs[:2:2], rs[3:]...) },
			problems: []string{"seq 3: record seq 3 is missing: not in the archive"},
		},
		{
			name:     "records removed",
			edit:     func(rs [][]byte) [][]byte { return append(rs[:1:1], rs[4:]...) },
			problems: []string{"seq 2: records seq 2 to 4 are missing: not in the archive"},
		},
		{
			name: "next to last record changed",
			edit: func(rs [][]byte) [][]byte { alter(rs, 4, `"crm.op4"`, `"crm.opX"`); return rs },
			problems: []string{
				"seq 5 at line 5: prev does not match the digest of seq 4 at line 4: that record or this one was changed",
			},
		},
		{
			name: "last record changed, no checkpoint",
			edit: func(rs [][]byte) [][]byte { alter(rs, 5, `"crm.op5"`, `"crm.opX"`); return rs },
			ok:   true, // the limit the notes state
		},
		{
			name:        "last record changed, checkpointed",
			edit:        func(rs [][]byte) [][]byte { alter(rs, 5, `"crm.op5"`, `"crm.opX"`); return rs },
			checkpoints: func(rs [][]byte) []Checkpoint { return []Checkpoint{checkpointOf(rs, 5)} },
			problems: []string{
				"seq 5 at line 5: does not match the checkpoint taken at 2026-01-02T04:00:00Z: it, or the chain before it, was rewritten after the checkpoint",
			},
		},
		{
			name: "chain rewritten consistently",
			edit: func(rs [][]byte) [][]byte {
				alter(rs, 2, `"crm.op2"`, `"crm.opX"`)
				rechain(t, rs, 2)
				return rs
			},
			checkpoints: func(rs [][]byte) []Checkpoint { return []Checkpoint{checkpointOf(rs, 1), checkpointOf(rs, 4)} },
			checked:     1,
			problems: []string{
				"seq 4 at line 4: does not match the checkpoint taken at 2026-01-02T04:00:00Z: it, or the chain before it, was rewritten after the checkpoint",
			},
		},
		{
			name:        "checkpoints match",
			checkpoints: func(rs [][]byte) []Checkpoint { return []Checkpoint{checkpointOf(rs, 2), checkpointOf(rs, 5)} },
			checked:     2,
			ok:          true,
		},
		{
			name:        "archive from seq 3, anchored by a checkpoint",
			edit:        func(rs [][]byte) [][]byte { return rs[2:] },
			checkpoints: func(rs [][]byte) []Checkpoint { return []Checkpoint{checkpointOf(rs, 2)} },
			checked:     1,
			ok:          true,
		},
		{
			name: "archive from seq 3, first record's prev forged",
			edit: func(rs [][]byte) [][]byte {
				alter(rs, 3, digest(rs[1]), digest([]byte("forged")))
				rechain(t, rs, 3)
				return rs[2:]
			},
			checkpoints: func(rs [][]byte) []Checkpoint { return []Checkpoint{checkpointOf(rs, 2)} },
			problems: []string{
				"seq 3 at line 1: prev does not match the checkpoint of seq 2 taken at 2026-01-02T04:00:00Z",
			},
		},
		{
			name: "unreadable line",
			edit: func(rs [][]byte) [][]byte { rs[2] = []byte(`not json`); return rs },
			problems: []string{
				"line 3: unreadable: not an audit record: invalid character 'o' in literal null (expecting 'u')",
				"line 3: changed after it was written: its digest does not match the prev stored in seq 4 at line 4",
			},
		},
		{
			name: "record without an id",
			edit: func(rs [][]byte) [][]byte { rs[2] = []byte(`{"seq":3}`); return rs },
			problems: []string{
				"line 3: unreadable: not an audit record: no id",
				"line 3: changed after it was written: its digest does not match the prev stored in seq 4 at line 4",
			},
		},
		{
			name: "duplicated record",
			edit: func(rs [][]byte) [][]byte { return append(rs[:3:3], rs[2:]...) },
			problems: []string{
				"seq 3 at line 4: out of order: seq 3 comes after seq 3",
			},
		},
		{
			name: "unchained records before the chain",
			edit: func(rs [][]byte) [][]byte {
				var old [][]byte
				for i := range 2 {
					r := call("impact", "old.op")
					r.ID, r.Time = fmt.Sprintf("old%d", i), time.Date(2025, 1, 1, 0, 0, i, 0, time.UTC)
					data, _ := json.Marshal(r)
					old = append(old, data)
				}
				// The first chained record names the last unchained one.
				var first Record
				_ = json.Unmarshal(rs[0], &first)
				first.Prev = digest(old[1])
				rs[0], _ = json.Marshal(first)
				rechain(t, rs, 1)
				return append(old, rs...)
			},
			ok: true,
		},
		{
			name: "unchained record after the chain",
			edit: func(rs [][]byte) [][]byte {
				r := call("impact", "sneaked.in")
				r.ID, r.Time = "sneaked", time.Date(2026, 1, 2, 3, 4, 30, 0, time.UTC)
				data, _ := json.Marshal(r)
				return append(rs, data)
			},
			problems: []string{
				"line 6: has no seq and prev, yet records before it are chained: written around the chain",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			original := testChain(t, 5)
			records := testChain(t, 5)
			if tt.edit != nil {
				records = tt.edit(records)
			}
			var cps []Checkpoint
			if tt.checkpoints != nil {
				cps = tt.checkpoints(original)
			}
			rep, err := VerifyArchive(bytes.NewReader(archive(records)), cps, nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.problems, problems(rep), cmpEmpty); rep.OK != tt.ok || diff != "" {
				t.Errorf("VerifyArchive: ok %v, want %v; problems (-want +got):\n%s", rep.OK, tt.ok, diff)
			}
			if rep.Checkpoints != tt.checked {
				t.Errorf("VerifyArchive: %d checkpoints matched, want %d", rep.Checkpoints, tt.checked)
			}
		})
	}
}

// cmpEmpty treats nil and empty slices alike.
var cmpEmpty = cmp.Transformer("empty", func(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
})

func TestVerifyArchiveNamesTheRecord(t *testing.T) {
	records := testChain(t, 5)
	records[1] = bytes.Replace(records[1], []byte(`"crm.op2"`), []byte(`"crm.opX"`), 1)
	rep, err := VerifyArchive(bytes.NewReader(archive(records)), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Problem{Seq: 2, Line: 2, ID: "id2", Time: time.Date(2026, 1, 2, 3, 4, 2, 0, time.UTC), Agent: "impact", Target: "crm.opX",
		What: "changed after it was written: its digest does not match the prev stored in seq 3 at line 3"}
	if len(rep.Problems) != 1 {
		t.Fatalf("problems = %v, want one", rep.Problems)
	}
	if diff := cmp.Diff(want, rep.Problems[0]); diff != "" {
		t.Errorf("problem (-want +got):\n%s", diff)
	}
	wantLine := "seq 2 at line 2 (id id2, 2026-01-02T03:04:02Z, agent impact, target crm.opX): changed after it was written: its digest does not match the prev stored in seq 3 at line 3"
	if got := rep.Problems[0].String(); got != wantLine {
		t.Errorf("String() =\n%s\nwant\n%s", got, wantLine)
	}
}

func TestVerifyArchiveLines(t *testing.T) {
	records := testChain(t, 3)
	crlf := append(bytes.Join(records, []byte("\r\n\r\n")), "\r\n\n"...)
	rep, err := VerifyArchive(bytes.NewReader(crlf), nil, nil)
	if err != nil || !rep.OK || rep.Records != 3 {
		t.Errorf("VerifyArchive with CRLF and blank lines = %+v, %v; want OK over 3", rep, err)
	}
	noFinalNewline := bytes.Join(records, []byte("\n"))
	if rep, err := VerifyArchive(bytes.NewReader(noFinalNewline), nil, nil); err != nil || !rep.OK || rep.Records != 3 {
		t.Errorf("VerifyArchive without a final newline = %+v, %v; want OK over 3", rep, err)
	}
	rep, err = VerifyArchive(strings.NewReader(""), nil, nil)
	if err != nil || !rep.OK || rep.Records != 0 || !contains(rep.Notes, "holds no records") {
		t.Errorf("VerifyArchive of nothing = %+v, %v", rep, err)
	}
	var calls []Progress
	many := testChain(t, progressEvery+1)
	if _, err := VerifyArchive(bytes.NewReader(archive(many)), nil, func(p Progress) { calls = append(calls, p) }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Progress{{Records: progressEvery, Seq: progressEvery}}, calls); diff != "" {
		t.Errorf("progress calls (-want +got):\n%s", diff)
	}
}

func TestReadLinesTooLong(t *testing.T) {
	// Longer than the reader's buffer, so that lines come in pieces.
	const limit = 100 << 10
	in := bytes.Join([][]byte{
		[]byte("a"),
		bytes.Repeat([]byte("x"), limit+1),
		bytes.Repeat([]byte("y"), limit),
		[]byte("b\r"),
	}, []byte("\n"))
	var got []string
	if err := readLines(bytes.NewReader(in), limit, func(n int, line []byte, tooLong bool) {
		got = append(got, fmt.Sprintf("%d: %d bytes, too long %v", n, len(line), tooLong))
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"1: 1 bytes, too long false", "2: 0 bytes, too long true", fmt.Sprintf("3: %d bytes, too long false", limit), "4: 1 bytes, too long false"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("readLines (-want +got):\n%s", diff)
	}
}

func TestReadCheckpoints(t *testing.T) {
	records := testChain(t, 2)
	cp := checkpointOf(records, 2)
	line, _ := json.Marshal(cp)
	got, err := ReadCheckpoints(bytes.NewReader(append(append(line, "\n\n"...), line...)))
	if err != nil || len(got) != 2 || got[0] != cp {
		t.Errorf("ReadCheckpoints = %v, %v; want two of %v", got, err, cp)
	}
	for _, bad := range []string{`{"seq": 1}`, `{"seq": 1, "digest": "sha256:x"}`, `{"seq": 0, "digest": "` + cp.Digest + `"}`, `[]`, `x`} {
		if _, err := ReadCheckpoints(strings.NewReader(string(line) + "\n" + bad + "\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("ReadCheckpoints(... %s) = %v, want an error at line 2", bad, err)
		}
	}
}

// FuzzVerifyArchive feeds arbitrary archives and checkpoint files to the
// offline verifier: it never panics, and it counts every non-blank line.
func FuzzVerifyArchive(f *testing.F) {
	records := testChain(f, 4)
	cp, _ := json.Marshal(checkpointOf(records, 2))
	f.Add(archive(records), cp)
	altered := bytes.Replace(archive(records), []byte("crm.op2"), []byte("crm.opX"), 1)
	f.Add(altered, cp)
	f.Add(archive(append(records[:1:1], records[2:]...)), []byte{})
	f.Add([]byte("not json\n{}\nnull\n[1]\n{\"id\":\"x\",\"seq\":18446744073709551615}\n"), []byte("{}"))
	f.Add([]byte(`{"id":"a","seq":2,"prev":"sha256:00"}`+"\r\n\r\n"+`{"id":"b","seq":1}`), cp)
	f.Fuzz(func(t *testing.T, data, checkpoints []byte) {
		cps, _ := ReadCheckpoints(bytes.NewReader(checkpoints))
		rep, err := VerifyArchive(bytes.NewReader(data), cps, nil)
		if err != nil {
			t.Fatalf("VerifyArchive: %v", err)
		}
		lines := uint64(0)
		for _, l := range bytes.Split(data, []byte("\n")) {
			if len(bytes.TrimSpace(l)) > 0 {
				lines++
			}
		}
		if rep.Records != lines {
			t.Errorf("VerifyArchive read %d records of %d non-blank lines", rep.Records, lines)
		}
		if rep.OK != (len(rep.Problems) == 0) {
			t.Errorf("VerifyArchive: OK %v with %d problems", rep.OK, len(rep.Problems))
		}
	})
}

// BenchmarkVerifyArchive is the offline check of an archive of 10000
// records: what a year's archive costs, per record.
func BenchmarkVerifyArchive(b *testing.B) {
	data := archive(testChain(b, 10000))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		rep, err := VerifyArchive(bytes.NewReader(data), nil, nil)
		if err != nil || !rep.OK {
			b.Fatalf("VerifyArchive = %+v, %v", rep, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10000, "ns/record")
}
