package main

import (
	"bytes"
	"strings"
	"testing"
)

const goodLine = `{"peer":"dbos","config":{"durability":"WAL fsync at every commit"},"workflows":3,"steps_per_workflow":10,` +
	`"concurrency":2,"steps":30,"window_steps":30,"seconds":0.5,"steps_per_sec":60,"workflows_per_sec":6,"workflow_p50_ms":100,"workflow_p99_ms":200,"steps_executed":30}`

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, line, want string // want: "" for no error
	}{
		{"good", goodLine, ""},
		{"empty", ``, "JSON line"},
		{"not JSON", `building...`, "JSON line"},
		{"wrongly typed", strings.Replace(goodLine, `"steps":30`, `"steps":"30"`, 1), "JSON line"},
		{"no peer", strings.Replace(goodLine, `"peer":"dbos"`, `"peer":""`, 1), "peer is empty"},
		{"no workflows", strings.Replace(goodLine, `"workflows":3`, `"workflows":0`, 1), "workflows 0"},
		{"steps miscounted", strings.Replace(goodLine, `"steps":30`, `"steps":31`, 1), "steps 31"},
		{"a step run twice", strings.Replace(goodLine, `"steps_executed":30`, `"steps_executed":31`, 1), "steps_executed 31"},
		{"no window", strings.Replace(goodLine, `"window_steps":30`, `"window_steps":0`, 1), "window_steps 0"},
		{"window beyond the run", strings.Replace(goodLine, `"window_steps":30`, `"window_steps":31`, 1), "window_steps 31"},
		{"no time", strings.Replace(goodLine, `"seconds":0.5`, `"seconds":0`, 1), "seconds 0"},
		{"negative rate", strings.Replace(goodLine, `"steps_per_sec":60`, `"steps_per_sec":-60`, 1), "steps_per_sec -60"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse([]byte(tc.line))
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("parse(%s) = %v, want %q", tc.line, err, tc.want)
			}
		})
	}
}

func TestTable(t *testing.T) {
	rs := func(rates ...float64) []result {
		var out []result
		for _, r := range rates {
			out = append(out, result{StepsPerSec: r, Config: map[string]string{"durability": "d"}})
		}
		return out
	}
	chosen := []peer{{name: "corral"}, {name: "temporal-file"}, {name: "dbos"}}
	results := map[string][]result{
		"corral":        rs(3000, 1000, 2000),
		"temporal-file": rs(100, 90, 110),
		"dbos":          rs(500, 400, 600),
	}
	var b bytes.Buffer
	table(&b, chosen, results, 3)
	out := b.String()
	// corral's median 2000 is 20× temporal's 100 and 4× dbos's 500.
	for _, want := range []string{"× temporal-file", "× dbos", "1000–3000", "20.00", "4.00", "0.20"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "× temporal-memory") {
		t.Errorf("table has a column for a baseline that did not run:\n%s", out)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(goodLine)
	f.Add(`{}`)
	f.Add(`{"peer":"x","workflows":1e309}`)
	f.Fuzz(func(t *testing.T, line string) {
		r, err := parse([]byte(line))
		if err == nil && (r.Peer == "" || r.StepsExecuted != int64(r.Steps) || !(r.StepsPerSec > 0)) {
			t.Errorf("parse(%q) = %+v, accepted a line the table cannot use", line, r)
		}
	})
}
