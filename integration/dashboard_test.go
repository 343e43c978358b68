package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// What deploy/ ships for operators: a Grafana dashboard and a Prometheus
// scrape configuration. The tests below hold them to the node: every
// metric and label value a panel asks for is on a running node's
// /metrics, so renaming a metric (or an exchange event) without updating
// the dashboard fails here rather than leaving an empty panel.
const (
	dashboardFile  = "../deploy/grafana/meshfs-dashboard.json"
	prometheusFile = "../deploy/prometheus/prometheus.yml"
)

// The dashboard and every panel query through this template variable.
const datasourceVar = "${datasource}"

// dashboard is the part of Grafana's dashboard JSON model the tests read.
type dashboard struct {
	UID           string                        `json:"uid"`
	Title         string                        `json:"title"`
	SchemaVersion int                           `json:"schemaVersion"`
	Panels        []dashPanel                   `json:"panels"`
	Templating    struct{ List []dashVariable } `json:"templating"`
}

type dashPanel struct {
	ID          int                       `json:"id"`
	Type        string                    `json:"type"`
	Title       string                    `json:"title"`
	Datasource  json.RawMessage           `json:"datasource"`
	GridPos     *struct{ H, W, X, Y int } `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // a collapsed row's
}

type dashVariable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"` // a string, or {"query": "..."}
	Definition string          `json:"definition"`
	Datasource json.RawMessage `json:"datasource"`
}

// dashQuery is one PromQL expression of the dashboard and where it is.
type dashQuery struct {
	where string // panel "Blocks" (row "Block exchange"), target A
	expr  string
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(b) {
		t.Fatalf("%s is not valid JSON", dashboardFile)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return &d
}

// panels walks the dashboard's panels in order with the row each sits
// under, the panels of collapsed rows included.
func (d *dashboard) panels(f func(p *dashPanel, row string)) {
	row := ""
	for i := range d.Panels {
		p := &d.Panels[i]
		if p.Type == "row" {
			row = p.Title
			for j := range p.Panels {
				f(&p.Panels[j], row)
			}
		}
		f(p, row)
	}
}

// queries are every PromQL expression the dashboard runs: its panels'
// targets, and the queries of its variables.
func (d *dashboard) queries(t *testing.T) []dashQuery {
	t.Helper()
	var qs []dashQuery
	d.panels(func(p *dashPanel, row string) {
		for _, tg := range p.Targets {
			qs = append(qs, dashQuery{fmt.Sprintf("panel %q (row %q), target %s", p.Title, row, tg.RefID), tg.Expr})
		}
	})
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := variableQuery(t, v)
		// Grafana's label_values(selector, label) around a PromQL selector.
		if m := labelValuesRE.FindStringSubmatch(q); m != nil {
			q = m[1]
		}
		qs = append(qs, dashQuery{fmt.Sprintf("variable %q", v.Name), q})
	}
	return qs
}

var labelValuesRE = regexp.MustCompile(`^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)

func variableQuery(t *testing.T, v dashVariable) string {
	t.Helper()
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &o); err != nil {
		t.Fatalf("variable %q: query %s: %v", v.Name, v.Query, err)
	}
	return o.Query
}

// usesDatasourceVar says a panel's or target's datasource is the
// dashboard's datasource variable.
func usesDatasourceVar(raw json.RawMessage) bool {
	var ds struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	if json.Unmarshal(raw, &ds) != nil {
		return false
	}
	return ds.Type == "prometheus" && (ds.UID == datasourceVar || ds.UID == "$datasource")
}

// compactJSON is raw JSON on one line, for messages.
func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// The dashboard is one Grafana imports as it is: a current schema, the
// datasource and instance variables, panels grouped in rows, every panel
// with units and querying through the datasource variable, every query
// parsed and filtered by the instance variable.
func TestDashboardIsWellFormed(t *testing.T) {
	d := loadDashboard(t)
	if d.SchemaVersion < 39 || d.UID == "" || d.Title == "" {
		t.Errorf("schemaVersion %d, uid %q, title %q: want a current schema (39 or later), a uid and a title", d.SchemaVersion, d.UID, d.Title)
	}

	vars := map[string]dashVariable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || variableQuery(t, v) != "prometheus" {
		t.Errorf("no template variable datasource of type datasource over prometheus: %+v", v)
	}
	if v, ok := vars["instance"]; !ok || v.Type != "query" || !usesDatasourceVar(v.Datasource) ||
		!strings.HasSuffix(strings.TrimSpace(variableQuery(t, v)), ", instance)") {
		t.Errorf("no template variable instance: label_values(…, instance) through %s: %+v", datasourceVar, v)
	}

	if len(d.Panels) == 0 || d.Panels[0].Type != "row" {
		t.Errorf("the first panel is not a row: panels are grouped in rows")
	}
	ids := map[int]string{}
	d.panels(func(p *dashPanel, row string) {
		where := fmt.Sprintf("panel %q (row %q)", p.Title, row)
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("%s: id %d (also %s)", where, p.ID, prev)
		}
		ids[p.ID] = where
		if g := p.GridPos; g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside Grafana's 24 columns", where, g)
		}
		if p.Type == "row" {
			return
		}
		if !usesDatasourceVar(p.Datasource) {
			t.Errorf("%s: datasource %s, want {type: prometheus, uid: %s}", where, compactJSON(p.Datasource), datasourceVar)
		}
		if p.FieldConfig.Defaults.Unit == "" {
			t.Errorf("%s: no unit (fieldConfig.defaults.unit)", where)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no targets", where)
		}
		for _, tg := range p.Targets {
			if !usesDatasourceVar(tg.Datasource) {
				t.Errorf("%s, target %s: datasource %s, want {type: prometheus, uid: %s}", where, tg.RefID, compactJSON(tg.Datasource), datasourceVar)
			}
		}
	})

	for _, q := range d.queries(t) {
		sels, err := promSelectors(q.expr)
		if err != nil {
			t.Errorf("%s: %v in %s", q.where, err, q.expr)
			continue
		}
		if len(sels) == 0 {
			t.Errorf("%s: names no metric: %s", q.where, q.expr)
		}
		if strings.HasPrefix(q.where, "variable") {
			continue
		}
		for _, s := range sels {
			if !s.has("instance", "=~", "$instance") {
				t.Errorf("%s: %s is not filtered by instance=~\"$instance\"", q.where, s)
			}
		}
	}
}

// prometheusConfig is the part of prometheus.yml the tests read.
type prometheusConfig struct {
	Global struct {
		ScrapeInterval string `yaml:"scrape_interval"`
		ScrapeTimeout  string `yaml:"scrape_timeout"`
	} `yaml:"global"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		Scheme        string `yaml:"scheme"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// meshfsMetricsPath reads the scrape configuration and returns the
// metrics path of its meshfs job, failing t on anything Prometheus would
// not scrape a node with.
func meshfsMetricsPath(t *testing.T) string {
	t.Helper()
	var c prometheusConfig
	readYAML(t, prometheusFile, &c)
	interval, err := time.ParseDuration(c.Global.ScrapeInterval)
	if err != nil || interval <= 0 {
		t.Errorf("global scrape_interval %q: %v", c.Global.ScrapeInterval, err)
	}
	if timeout, err := time.ParseDuration(c.Global.ScrapeTimeout); err != nil || timeout <= 0 || timeout > interval {
		t.Errorf("global scrape_timeout %q (interval %s): Prometheus wants it positive and at most the interval (%v)", c.Global.ScrapeTimeout, interval, err)
	}
	for _, sc := range c.ScrapeConfigs {
		if sc.JobName != "meshfs" {
			continue
		}
		if sc.Scheme != "" && sc.Scheme != "http" {
			t.Errorf("job meshfs: scheme %q; the node's API is plain http", sc.Scheme)
		}
		n := 0
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				if _, _, err := net.SplitHostPort(tg); err != nil {
					t.Errorf("job meshfs: target %q is not host:port: %v", tg, err)
				}
				n++
			}
		}
		if n == 0 {
			t.Errorf("job meshfs has no example targets")
		}
		if sc.MetricsPath != "/metrics" {
			t.Errorf("job meshfs: metrics_path %q, want /metrics (where the API serves them)", sc.MetricsPath)
		}
		return sc.MetricsPath
	}
	t.Fatalf("%s: no scrape config with job_name meshfs", prometheusFile)
	return ""
}

// The scrape configuration parses and scrapes /metrics of its targets.
func TestPrometheusConfig(t *testing.T) {
	meshfsMetricsPath(t)
}

// Grafana's provisioning files parse, name a Prometheus data source, and
// load dashboards from where deploy/README.md mounts the dashboard.
func TestGrafanaProvisioning(t *testing.T) {
	const dir = "../deploy/grafana/provisioning"
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, Type, URL string
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join(dir, "datasources/prometheus.yml"), &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" ||
		!strings.HasPrefix(ds.Datasources[0].URL, "http://") {
		t.Errorf("datasources/prometheus.yml: %+v, want apiVersion 1 and one prometheus data source with an http URL", ds)
	}
	var dash struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Type    string
			Options struct{ Path string }
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join(dir, "dashboards/meshfs.yml"), &dash)
	if dash.APIVersion != 1 || len(dash.Providers) != 1 || dash.Providers[0].Type != "file" || dash.Providers[0].Options.Path == "" {
		t.Fatalf("dashboards/meshfs.yml: %+v, want apiVersion 1 and one file provider with a path", dash)
	}
	readme, err := os.ReadFile("../deploy/README.md")
	if err != nil {
		t.Fatal(err)
	}
	mount := "meshfs-dashboard.json:" + dash.Providers[0].Options.Path + "/meshfs-dashboard.json"
	if !strings.Contains(string(readme), mount) {
		t.Errorf("deploy/README.md does not mount the dashboard where the provider reads it (%s)", mount)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// Every metric, and every label value, the dashboard queries is on the
// /metrics of running nodes (scraped at the configuration's metrics_path)
// after an upload, a download between two nodes and a collection.
func TestDashboardMetricsExistOnANode(t *testing.T) {
	path := meshfsMetricsPath(t)
	qs := loadDashboard(t).queries(t)

	tmp := t.TempDir()
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0"}
	a := startDaemon(t, filepath.Join(tmp, "a"), "", listen...)
	b := startDaemon(t, filepath.Join(tmp, "b"), "", append(listen, "--bootstrap", a.p2pAddr(t))...)
	file := writeRandomFile(t, tmp, 1<<20, 16)
	id := a.upload(t, file)
	got := filepath.Join(tmp, "got")
	if r := b.meshfs(t, "download", id, "-o", got); r.code != 0 {
		t.Fatalf("download: %s", r.stderr)
	}
	must(t, "cmp", got, file)
	gc(t, b)

	// What the two nodes serve, together: a dashboard over both shows a
	// series if either has it.
	scraped := scrapeText{}
	for _, d := range []*daemon{a, b} {
		scraped.read(t, d.API+path)
	}

	var missing []string
	checked, metrics := 0, map[string]bool{}
	for _, q := range qs {
		sels, err := promSelectors(q.expr)
		if err != nil {
			t.Fatalf("%s: %v in %s", q.where, err, q.expr)
		}
		for _, s := range sels {
			checked++
			metrics[s.metric] = true
			if why := scraped.lacks(s); why != "" {
				missing = append(missing, fmt.Sprintf("%s: %s", q.where, why))
			}
		}
	}
	if len(missing) > 0 {
		t.Errorf("the dashboard (%s) queries what a node's %s does not serve:\n  %s", dashboardFile, path, strings.Join(missing, "\n  "))
	} else {
		t.Logf("%d queries, %d selectors over %d metrics: all on the nodes' %s", len(qs), checked, len(metrics), path)
	}

	// Metrics of the node no panel shows: not an error (a new metric may
	// wait for its panel), but worth a line in the log.
	named := map[string]bool{}
	for _, q := range qs {
		sels, _ := promSelectors(q.expr)
		for _, s := range sels {
			named[scraped.family(s.metric)] = true
		}
	}
	var unshown []string
	for name := range scraped.types {
		if strings.HasPrefix(name, "meshfs_") && !named[name] {
			unshown = append(unshown, name)
		}
	}
	sort.Strings(unshown)
	if len(unshown) > 0 {
		t.Logf("meshfs metrics on no panel: %s", strings.Join(unshown, ", "))
	}
}

// scrapeText is a scrape in Prometheus's text format: every series name
// as exposed (a histogram's x_bucket, x_sum, x_count, never x itself)
// with the label sets it has, and each family's type.
type scrapeText struct {
	series map[string][]map[string]string
	types  map[string]string // family name: counter, gauge, histogram, ...
}

func (e *scrapeText) read(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v\n%s", url, resp.Status, err, body)
	}
	if e.series == nil {
		e.series, e.types = map[string][]map[string]string{}, map[string]string{}
	}
	for n, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			e.types[f[2]] = f[3]
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, err := parseScrapeLine(line)
		if err != nil {
			t.Fatalf("GET %s: line %d %q: %v", url, n+1, line, err)
		}
		e.series[name] = append(e.series[name], labels)
	}
	if len(e.series) == 0 {
		t.Fatalf("GET %s: no samples", url)
	}
}

// family is the metric family a series name belongs to: x for x_bucket of
// a histogram x, and so on.
func (e *scrapeText) family(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if typ := e.types[base]; typ == "histogram" || (typ == "summary" && suffix != "_bucket") {
				return base
			}
		}
	}
	return name
}

// lacks says what of selector s the scrape does not have, or "".
func (e *scrapeText) lacks(s promSelector) string {
	sets, ok := e.series[s.metric]
	if !ok {
		if typ := e.types[s.metric]; typ == "histogram" || typ == "summary" {
			return fmt.Sprintf("%s is a %s: Prometheus stores it as %s_bucket, %s_sum and %s_count", s.metric, typ, s.metric, s.metric, s.metric)
		}
		return fmt.Sprintf("no metric %s", s.metric)
	}
	var lacking []string
	for _, m := range s.matchers {
		if m.label == "instance" || m.label == "job" || strings.Contains(m.value, "$") {
			continue // Prometheus's target labels, Grafana's variables
		}
		has := func(v string) bool {
			for _, l := range sets {
				if got, ok := l[m.label]; ok && (v == got || (m.op == "=~" && regexp.MustCompile("^(?:"+v+")$").MatchString(got))) {
					return true
				}
			}
			return false
		}
		switch m.op {
		case "=":
			if !has(m.value) {
				lacking = append(lacking, fmt.Sprintf("%s=%q", m.label, m.value))
			}
		case "=~":
			if _, err := regexp.Compile(m.value); err != nil {
				lacking = append(lacking, fmt.Sprintf("%s=~%q (bad regexp: %v)", m.label, m.value, err))
			} else if alts, literal := literalAlternatives(m.value); literal {
				for _, v := range alts {
					if !has(v) {
						lacking = append(lacking, fmt.Sprintf("%s=%q", m.label, v))
					}
				}
			} else if !has(m.value) {
				lacking = append(lacking, fmt.Sprintf("%s=~%q", m.label, m.value))
			}
		}
	}
	if len(lacking) > 0 {
		return fmt.Sprintf("%s has no series with %s", s.metric, strings.Join(lacking, ", "))
	}
	return ""
}

var literalRE = regexp.MustCompile(`^[a-zA-Z0-9_]+(\|[a-zA-Z0-9_]+)*$`)

// literalAlternatives splits a|b|c; literal says the regexp is only that.
func literalAlternatives(re string) (alts []string, literal bool) {
	if !literalRE.MatchString(re) {
		return nil, false
	}
	return strings.Split(re, "|"), true
}

// parseScrapeLine reads `name{l="v",...} value [timestamp]`.
func parseScrapeLine(line string) (name string, labels map[string]string, err error) {
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return "", nil, fmt.Errorf("no metric name")
	}
	name, rest := line[:i], line[i:]
	labels = map[string]string{}
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " ,")
			if strings.HasPrefix(rest, "}") {
				break
			}
			eq := strings.Index(rest, `="`)
			if eq <= 0 {
				return "", nil, fmt.Errorf("bad label at %q", rest)
			}
			label := rest[:eq]
			v, n, err := unquoteLabel(rest[eq+1:])
			if err != nil {
				return "", nil, err
			}
			labels[label] = v
			rest = rest[eq+1+n:]
		}
	}
	return name, labels, nil
}

// unquoteLabel reads the double-quoted string s begins with, returning its
// value and how many bytes of s it took.
func unquoteLabel(s string) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 == len(s) {
				return "", 0, fmt.Errorf("unterminated string %q", s)
			}
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			default:
				b.WriteByte(s[i])
			}
		case '"':
			return b.String(), i + 1, nil
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, fmt.Errorf("unterminated string %q", s)
}
