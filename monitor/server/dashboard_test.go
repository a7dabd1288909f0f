package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Debian ships no Grafana, so the dashboard in docs/grafana is checked
// against what the exporter serves: valid JSON of Grafana's dashboard model,
// every query naming only metrics the exporter has, with labels they have;
// and the admin guide lists every metric.
func TestDashboardUsesServedMetrics(t *testing.T) {
	files, _ := filepath.Glob("../../docs/grafana/*.json")
	if len(files) == 0 {
		t.Fatal("no dashboard in docs/grafana")
	}
	metricRE := regexp.MustCompile(`\bmlc_[a-z0-9_]+`)
	matcherRE := regexp.MustCompile(`\{([^}]*)\}`)
	byRE := regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	served := map[string]bool{}
	for _, n := range MetricNames() {
		served[n] = true
	}
	used := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Title, UID string
			Panels     []struct {
				ID      int
				Type    string
				Title   string
				GridPos struct{ X, Y, W, H int }       `json:"gridPos"`
				Targets []struct{ RefID, Expr string } `json:"targets"`
			}
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.Title == "" || d.UID == "" || len(d.Panels) < 10 {
			t.Fatalf("%s: title %q uid %q, %d panels", f, d.Title, d.UID, len(d.Panels))
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] || p.Type == "" || p.Title == "" || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 || len(p.Targets) == 0 {
				t.Errorf("%s: panel %d %q is malformed: %+v", f, p.ID, p.Title, p)
			}
			ids[p.ID] = true
			for _, tg := range p.Targets {
				e := tg.Expr
				if strings.Count(e, "(") != strings.Count(e, ")") || strings.Count(e, "{") != strings.Count(e, "}") {
					t.Errorf("%s: %q: unbalanced", p.Title, e)
				}
				names := metricRE.FindAllString(e, -1)
				if len(names) == 0 {
					t.Errorf("%s: %q names no mlc metric", p.Title, e)
				}
				var labels []string
				for _, n := range names {
					if !served[n] {
						t.Errorf("%s: %q uses %s, which the exporter does not serve", p.Title, e, n)
					}
					used[n] = true
					labels = append(labels, MetricLabels(n)...)
				}
				var asked []string
				for _, m := range matcherRE.FindAllStringSubmatch(e, -1) {
					for _, kv := range strings.Split(m[1], ",") {
						if k := strings.TrimSpace(strings.FieldsFunc(kv, func(r rune) bool { return r == '=' || r == '!' || r == '~' })[0]); k != "" {
							asked = append(asked, k)
						}
					}
				}
				for _, m := range byRE.FindAllStringSubmatch(e, -1) {
					for _, k := range strings.Split(m[1], ",") {
						asked = append(asked, strings.TrimSpace(k))
					}
				}
				for _, k := range asked {
					if k != "" && !slices.Contains(labels, k) {
						t.Errorf("%s: %q uses label %s, which %v do not have", p.Title, e, k, names)
					}
				}
			}
		}
	}
	for _, want := range []string{"mlc_gpu_allocated", "mlc_container_gpu_utilization_percent", "mlc_user_cpu_percent", "mlc_gpu_utilization_percent", "mlc_gpu_unattributed_processes"} {
		if !used[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
	guide, err := os.ReadFile("../../docs/admin-guide.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range MetricNames() {
		if !strings.Contains(string(guide), "`"+n+"`") {
			t.Errorf("docs/admin-guide.md does not list the metric %s", n)
		}
	}
}
