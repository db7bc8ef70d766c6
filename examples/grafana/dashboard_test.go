// Package grafana holds corral's Grafana dashboard; its test keeps the
// dashboard's queries in step with the metrics corral defines.
package grafana

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

func load(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile("corral-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("corral-dashboard.json: %v", err)
	}
	return d
}

// panels lists every panel, those inside rows included.
func panels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, panels(p.Panels)...)
	}
	return out
}

// metricName finds the corral metrics an expression reads.
var metricName = regexp.MustCompile(`\bcorral_[a-z_]+\b`)

// baseName strips the series suffixes of histograms.
func baseName(m string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(m, suffix); ok && strings.HasSuffix(b, "_seconds") {
			return b
		}
	}
	return m
}

func TestDashboardQueries(t *testing.T) {
	d := load(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q, uid %q; want both", d.Title, d.UID)
	}
	var hasDatasourceVar bool
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus" {
			hasDatasourceVar = true
		}
	}
	if !hasDatasourceVar {
		t.Error("no Prometheus datasource variable named datasource")
	}
	queries := 0
	for _, p := range panels(d.Panels) {
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the ${datasource} variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			queries++
			if !metricName.MatchString(q.Expr) {
				t.Errorf("panel %q: query %q reads no corral_ metric", p.Title, q.Expr)
			}
			if strings.Count(q.Expr, "(") != strings.Count(q.Expr, ")") || strings.Count(q.Expr, "{") != strings.Count(q.Expr, "}") {
				t.Errorf("panel %q: query %q has unbalanced brackets", p.Title, q.Expr)
			}
		}
	}
	if queries == 0 {
		t.Fatal("the dashboard has no queries")
	}
}

// TestDashboardCoversMetrics: every metric corral defines (a Name or a
// NewDesc in internal/) has a panel, and every metric a panel reads is one
// corral defines or one the dashboard expects to come.
func TestDashboardCoversMetrics(t *testing.T) {
	defined := definedMetrics(t)
	// Metrics whose panels are ready before the code that reports them.
	coming := []string{"corral_stage_duration_seconds"}
	read := map[string]bool{}
	for _, p := range panels(load(t).Panels) {
		for _, q := range p.Targets {
			for _, m := range metricName.FindAllString(q.Expr, -1) {
				m = baseName(m)
				read[m] = true
				if !defined[m] && !slices.Contains(coming, m) {
					t.Errorf("panel %q reads %s, which corral does not define", p.Title, m)
				}
			}
		}
	}
	for m := range defined {
		if !read[m] {
			t.Errorf("corral defines %s but no panel shows it: add one to examples/grafana/corral-dashboard.json", m)
		}
	}
}

// definition finds metric names where they are declared in Go.
var definition = regexp.MustCompile(`(?:Name:\s*|NewDesc\(\s*)"(corral_[a-z_]+)"`)

func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := filepath.WalkDir(filepath.Join("..", "..", "internal"), func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range definition.FindAllStringSubmatch(string(data), -1) {
			out[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("found no metric definitions under internal/")
	}
	return out
}
