package dashboards_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lbpay-lab/core-dict/dict"
	"github.com/lbpay-lab/core-dict/dictsim"
	"github.com/lbpay-lab/core-dict/internal/testdb"
	"github.com/lbpay-lab/core-dict/rpc"
	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
	"github.com/lbpay-lab/core-dict/rpc/dict/v1/dictv1connect"
)

// The dashboards the README promises, by file name and uid.
var wantDashboards = map[string]string{
	"core-dict-overview.json":         "core-dict-overview",
	"core-dict-cache-limiters.json":   "core-dict-cache-limiters",
	"core-dict-events-outbox.json":    "core-dict-events-outbox",
	"core-dict-directory-claims.json": "core-dict-directory-claims",
}

// seedMetrics are the metrics the seed lists (/work/shared/seed: "Metrics Exposed"), as sample
// names (a histogram's _bucket): each must be exported and on a dashboard.
var seedMetrics = []string{
	"redis_connections_active", "redis_connections_idle", "redis_hits_total", "redis_misses_total",
	"redis_operations_duration_seconds_bucket",
	"pulsar_messages_sent_total", "pulsar_messages_received_total", "pulsar_publish_latency_seconds_bucket",
	"pulsar_consumer_lag",
	"rate_limit_requests_total", "rate_limit_active_limiters",
}

// grafanaBuiltins stand in for the variables Grafana computes itself.
var grafanaBuiltins = map[string]string{
	"$__rate_interval": "1m",
	"$__interval":      "15s",
	"$__range":         "5m",
}

const jwtSecret = "dashboards-test-secret-0123456789abcdef"

// TestDashboardsOnPrometheus runs core-dict and the simulated directory as `make run` does (the
// built binary, on PostgreSQL, Redis and Pulsar), has Debian's Prometheus scrape them with
// deploy/prometheus.yml, makes traffic (key writes and reads, lookups, a claim, refusals, VSync
// checks), and then evaluates every expression of every dashboard through Prometheus' HTTP API:
// each must parse, name only metrics the service exports, and return data. The service's
// /metrics must pass `promtool check metrics`.
func TestDashboardsOnPrometheus(t *testing.T) {
	root := repoRoot(t)
	promBin := lookPath(t, "prometheus")
	promtool := lookPath(t, "promtool")
	dashboards := loadDashboards(t, root)

	ctx := context.Background()
	db, err := testdb.Create(ctx, "dashboards")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	simDB, err := testdb.CreateMigrated(ctx, "dashsim", dictsim.Migrate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(simDB.Close)
	bin := buildCoreDict(t, root)

	ispbA, ispbB := randDigits(8), randDigits(8)
	apiPort, metricsPort, simPort, promPort := freePort(t), freePort(t), freePort(t), freePort(t)
	topics := "dashboards-" + randDigits(10)
	env := []string{
		"DATABASE_URL=" + db.AppURL,
		"MIGRATE_DATABASE_URL=" + db.URL,
		"DICTSIM_DATABASE_URL=" + simDB.URL,
		"LISTEN_HOST=127.0.0.1",
		"GRPC_PORT=" + strconv.Itoa(apiPort),
		"METRICS_PORT=" + strconv.Itoa(metricsPort),
		"DICTSIM_METRICS_PORT=" + strconv.Itoa(simPort),
		"JWT_SECRET=" + jwtSecret,
		"DICT_PARTICIPANTS=" + ispbA + "," + ispbB,
		"DICT_PARTICIPANT_NAMES=" + ispbA + "=Banco A," + ispbB + "=Banco B",
		"DICT_PARTICIPANT_CATEGORY=A",
		"DICTSIM_PARTICIPANT_CATEGORY=A",
		"PULSAR_TOPIC_KEY_EVENTS=persistent://dict/events/" + topics + "-keys",
		"PULSAR_TOPIC_CLAIM_EVENTS=persistent://dict/events/" + topics + "-claims",
		"PULSAR_TOPIC_DICT_REQ_OUT=persistent://lb-conn/dict/" + topics + "-req",
		"PULSAR_TOPIC_DICT_RES_IN=persistent://lb-conn/dict/" + topics + "-res",
		"PULSAR_DLQ_TOPIC=persistent://core-dict/dlq/" + topics + "-dlq",
		// VSync checks every 10s, so that the directory's request/reply and the VSync metrics move
		// while the test runs; a low per-account rate so that a burst is refused.
		"SYNC_CHECK_INTERVAL=10s",
		"RATE_LIMIT_ACCOUNT_RPS=10",
		"LOOKUP_STATS_FLUSH_INTERVAL=1s",
		"LOG_LEVEL=info",
		"DICT_DIRECTORY_TIMEOUT=30s", // a loaded CI machine; this test is about metrics, not latency
	}
	if u := os.Getenv("PULSAR_URL"); u != "" {
		env = append(env, "PULSAR_URL="+u)
	}
	startProcess(t, "dictsim", bin, []string{"dictsim"}, env)
	startProcess(t, "core-dict", bin, []string{"serve"}, env)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d", metricsPort)
	waitHTTP(t, metricsURL+"/readyz", 90*time.Second)
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", simPort), 90*time.Second)

	prom := startPrometheus(t, root, promBin, promtool, promPort, metricsPort, simPort)
	prom.waitTargetsUp(t, 60*time.Second)

	makeTraffic(t, fmt.Sprintf("http://127.0.0.1:%d", apiPort), ispbA, ispbB)

	// Prometheus has scraped after the traffic once the refusals, the directory's replies and the
	// claim (the claim counts are read from the database at most every 15s) are in.
	for _, q := range []string{
		`sum(rpc_server_requests_total{job="core-dict", code="resource_exhausted"}) > 0`,
		`sum(rate_limit_requests_total{job="core-dict", allowed="false"}) > 0`,
		`sum(request_reply_requests_total{job="core-dict", outcome="replied"}) > 0`,
		`sum(dict_claims{job="core-dict", status=~"PENDING|OPEN"}) > 0`,
		`sum(dict_vsync_checks_total{job="core-dict"}) > 0`,
		`sum(outbox_published_total{job="core-dict"}) > 0`,
	} {
		prom.waitData(t, q, 90*time.Second)
	}
	time.Sleep(3 * time.Second) // a few more scrapes

	exported := scrapeExported(t, metricsURL+"/metrics", promtool)
	if !exported["dict_claims"] || !exported["pgxpool_acquires_total"] || !exported["rpc_server_duration_seconds_bucket"] {
		t.Fatalf("the service's /metrics lacks the metrics this test knows it registers: %v", sortedKeys(exported))
	}

	checked := 0
	onDashboards := map[string]bool{}
	for _, d := range dashboards {
		vars := d.variables(t, prom, exported)
		for _, p := range d.allPanels() {
			for _, tg := range p.Targets {
				where := fmt.Sprintf("%s: panel %q, target %s", d.file, p.Title, tg.RefID)
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: no expression", where)
					continue
				}
				expr := substitute(tg.Expr, vars)
				if strings.Contains(expr, "$") {
					t.Errorf("%s: %q still names a variable the dashboard does not define", where, expr)
					continue
				}
				for _, n := range checkExpr(t, prom, exported, where, expr) {
					onDashboards[n] = true
				}
				checked++
			}
		}
	}
	t.Logf("%d dashboard expressions evaluated on Prometheus, naming %d metrics", checked, len(onDashboards))
	for _, m := range seedMetrics {
		if !exported[m] {
			t.Errorf("the seed's metric %s is not exported", m)
		}
		if !onDashboards[m] {
			t.Errorf("the seed's metric %s is on no dashboard", m)
		}
	}
	if checked < 40 {
		t.Errorf("only %d expressions in the dashboards; the four dashboards hold more", checked)
	}
}

// checkExpr parses expr with Prometheus, checks the metrics it names are exported, and
// evaluates it: no error, and data. It returns the metrics expr names.
func checkExpr(t *testing.T, prom *prometheus, exported map[string]bool, where, expr string) []string {
	t.Helper()
	formatted, err := prom.formatQuery(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return nil
	}
	names := metricNames(formatted)
	if len(names) == 0 {
		t.Errorf("%s: %q names no metric", where, expr)
	}
	for _, n := range names {
		if !exported[n] {
			t.Errorf("%s: %q names %s, which the service does not export", where, expr, n)
		}
	}
	res, err := prom.query(expr)
	if err != nil {
		t.Errorf("%s: %q: %v", where, expr, err)
		return names
	}
	if !res.hasData() {
		t.Errorf("%s: %q returned no data after the traffic", where, expr)
	}
	return names
}

// ---------------------------------------------------------------------------------------------
// Dashboards

type dashboard struct {
	file       string
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []target       `json:"targets"`
	Panels     []panel        `json:"panels"` // a collapsed row's
}

type target struct {
	RefID      string         `json:"refId"`
	Expr       string         `json:"expr"`
	Datasource *datasourceRef `json:"datasource"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
}

func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

func loadDashboards(t *testing.T, root string) []dashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "deploy", "grafana", "dashboards", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []dashboard
	seen := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s is not a Grafana dashboard (JSON): %v", f, err)
		}
		d.file = filepath.Base(f)
		if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
			t.Errorf("%s: a dashboard needs a uid, a title and panels", d.file)
		}
		if want, ok := wantDashboards[d.file]; ok && d.UID != want {
			t.Errorf("%s: uid %q, want %q", d.file, d.UID, want)
		}
		seen[d.file] = true
		dsVar := false
		for _, v := range d.Templating.List {
			if v.Type == "datasource" && strings.Trim(string(v.Query), `"`) == "prometheus" {
				dsVar = v.Name == "datasource"
			}
		}
		if !dsVar {
			t.Errorf("%s: no Prometheus data source variable named datasource", d.file)
		}
		for _, p := range d.allPanels() {
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", d.file, p.Title)
			}
			for _, ds := range append([]*datasourceRef{p.Datasource}, targetSources(p)...) {
				if ds == nil || ds.Type != "prometheus" || ds.UID != "${datasource}" {
					t.Errorf("%s: panel %q does not query the Prometheus data source variable: %+v", d.file, p.Title, ds)
				}
			}
		}
		out = append(out, d)
	}
	for f := range wantDashboards {
		if !seen[f] {
			t.Errorf("deploy/grafana/dashboards/%s is missing", f)
		}
	}
	if len(out) == 0 {
		t.FailNow()
	}
	return out
}

func targetSources(p panel) []*datasourceRef {
	var out []*datasourceRef
	for _, tg := range p.Targets {
		out = append(out, tg.Datasource)
	}
	return out
}

var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// variables resolves the dashboard's query variables as Grafana would by default: the "All"
// value when the variable has one, else the first value its query returns. Each variable's
// query must name exported metrics and return values.
func (d dashboard) variables(t *testing.T, prom *prometheus, exported map[string]bool) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for k, v := range grafanaBuiltins {
		vars[k] = v
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Errorf("%s: variable %s: query is neither a string nor an object", d.file, v.Name)
				continue
			}
		}
		m := labelValuesRE.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("%s: variable %s: %q is not label_values(selector, label)", d.file, v.Name, q.Query)
			continue
		}
		selector := substitute(m[1], vars)
		where := fmt.Sprintf("%s: variable %s", d.file, v.Name)
		formatted, err := prom.formatQuery(selector)
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", where, selector, err)
			continue
		}
		for _, n := range metricNames(formatted) {
			if !exported[n] {
				t.Errorf("%s: %q names %s, which the service does not export", where, selector, n)
			}
		}
		values, err := prom.labelValues(m[2], selector)
		if err != nil || len(values) == 0 {
			t.Errorf("%s: label_values(%s, %s) returned no values (%v)", where, selector, m[2], err)
			continue
		}
		if v.IncludeAll && v.AllValue != "" {
			vars["$"+v.Name] = v.AllValue
		} else {
			vars["$"+v.Name] = values[0]
		}
	}
	return vars
}

// substitute replaces $name and ${name} with the variables' values, longest names first.
func substitute(expr string, vars map[string]string) string {
	names := sortedKeys(boolKeys(vars))
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, n := range names {
		expr = strings.ReplaceAll(expr, "${"+strings.TrimPrefix(n, "$")+"}", vars[n])
		expr = strings.ReplaceAll(expr, n, vars[n])
	}
	return expr
}

// promqlWords are the PromQL keywords that may be followed by something else than "(": the
// aggregations (sum by (x) (...)), the binary operators and modifiers.
var promqlWords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true, "count": true,
	"count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true,
	"atan2": true, "start": true, "end": true,
}

// promqlLabelLists are the keywords followed by a list of label names.
var promqlLabelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// metricNames lists the metric names in a PromQL expression (as Prometheus formats it): the
// identifiers that are not functions, keywords, label names or inside strings, braces and
// brackets.
func metricNames(expr string) []string {
	seen := map[string]bool{}
	var out []string
	rs := []rune(expr)
	skipString := func(i int) int {
		q := rs[i]
		for i++; i < len(rs); i++ {
			if rs[i] == '\\' && q != '`' {
				i++
				continue
			}
			if rs[i] == q {
				return i + 1
			}
		}
		return i
	}
	skipTo := func(i int, open, close rune) int {
		depth := 0
		for i < len(rs) {
			switch rs[i] {
			case '"', '\'', '`':
				i = skipString(i)
				continue
			case open:
				depth++
			case close:
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	isStart := func(r rune) bool { return r == '_' || r == ':' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') }
	isPart := func(r rune) bool { return isStart(r) || (r >= '0' && r <= '9') }
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case r == '"' || r == '\'' || r == '`':
			i = skipString(i)
		case r == '{':
			i = skipTo(i, '{', '}')
		case r == '[':
			i = skipTo(i, '[', ']')
		case r >= '0' && r <= '9' || r == '.':
			for i < len(rs) && (isPart(rs[i]) || rs[i] == '.') {
				i++
			}
		case isStart(r):
			j := i
			for j < len(rs) && isPart(rs[j]) {
				j++
			}
			word := string(rs[i:j])
			k := j
			for k < len(rs) && rs[k] == ' ' {
				k++
			}
			next := rune(0)
			if k < len(rs) {
				next = rs[k]
			}
			switch {
			case promqlLabelLists[word] && next == '(':
				i = skipTo(k, '(', ')')
				continue
			case next == '(' || promqlWords[strings.ToLower(word)] || promqlLabelLists[word]:
			default:
				if !seen[word] {
					seen[word] = true
					out = append(out, word)
				}
			}
			i = j
		default:
			i++
		}
	}
	return out
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (procedure, code) (rate(rpc_server_requests_total{code!="ok",job=~"a|b"}[1m]))`:                      "rpc_server_requests_total",
		`histogram_quantile(0.99, sum by (le) (rate(request_reply_seconds_bucket{instance=~".+"}[5m])))`:             "request_reply_seconds_bucket",
		`time() - min(max by (participant, key_type) (dict_vsync_last_check_timestamp_seconds))`:                     "dict_vsync_last_check_timestamp_seconds",
		`sum(rate(a_total[1m] offset 5m)) / on (instance) group_left (job) b == bool 1 or vector(0)`:                 "a_total b",
		`max by (participant, key_type, result) (dict_vsync_last_result{job="x{y}"}) == 1 and on () up{a="]"} > 2e3`: "dict_vsync_last_result up",
	} {
		if got := strings.Join(metricNames(expr), " "); got != want {
			t.Errorf("metricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// The service's own /metrics

// scrapeExported reads the service's /metrics, has promtool lint it, and returns the sample
// names it exports (a histogram's _bucket, _sum and _count, a counter's _total).
func scrapeExported(t *testing.T, metricsURL, promtool string) map[string]bool {
	t.Helper()
	body := httpGet(t, metricsURL)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics on the service's /metrics: %v\n%s", err, out)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

// ---------------------------------------------------------------------------------------------
// Prometheus

type prometheus struct {
	base string
}

// startPrometheus runs Debian's Prometheus on port with deploy/prometheus.yml, its targets
// moved to the test's ports and its intervals to 1s.
func startPrometheus(t *testing.T, root, bin, promtool string, port, metricsPort, simPort int) *prometheus {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(src)
	for _, r := range []struct{ old, new string }{
		{`"127.0.0.1:9091"`, strconv.Quote("127.0.0.1:" + strconv.Itoa(metricsPort))},
		{`"127.0.0.1:9092"`, strconv.Quote("127.0.0.1:" + strconv.Itoa(simPort))},
		{"  scrape_interval: 15s\n", "  scrape_interval: 1s\n"},
		{"  evaluation_interval: 15s\n", "  evaluation_interval: 1s\n"},
	} {
		if !strings.Contains(conf, r.old) {
			t.Fatalf("deploy/prometheus.yml does not hold %q (the test moves it)", r.old)
		}
		conf = strings.ReplaceAll(conf, r.old, r.new)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "config", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config on deploy/prometheus.yml (test ports): %v\n%s", err, out)
	}
	startProcess(t, "prometheus", bin, []string{
		"--config.file=" + path,
		"--web.listen-address=127.0.0.1:" + strconv.Itoa(port),
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
	}, nil)
	p := &prometheus{base: "http://127.0.0.1:" + strconv.Itoa(port)}
	waitHTTP(t, p.base+"/-/ready", 60*time.Second)
	return p
}

type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

func (p *prometheus) api(path string, params url.Values) (json.RawMessage, error) {
	c := http.Client{Timeout: 30 * time.Second}
	res, err := c.Get(p.base + path + "?" + params.Encode())
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s answered HTTP %d: %s", path, res.StatusCode, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", r.ErrorType, r.Error)
	}
	return r.Data, nil
}

func (p *prometheus) formatQuery(expr string) (string, error) {
	data, err := p.api("/api/v1/format_query", url.Values{"query": {expr}})
	if err != nil {
		return "", err
	}
	var s string
	return s, json.Unmarshal(data, &s)
}

type queryResult struct {
	ResultType string            `json:"resultType"`
	Result     []json.RawMessage `json:"result"`
}

func (r queryResult) hasData() bool {
	if r.ResultType == "scalar" || r.ResultType == "string" {
		return true
	}
	return len(r.Result) > 0
}

func (p *prometheus) query(expr string) (queryResult, error) {
	var r queryResult
	data, err := p.api("/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(data, &r)
}

func (p *prometheus) labelValues(label, selector string) ([]string, error) {
	c := http.Client{Timeout: 30 * time.Second}
	res, err := c.Get(p.base + "/api/v1/label/" + url.PathEscape(label) + "/values?" + url.Values{"match[]": {selector}}.Encode())
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var r struct {
		Status string   `json:"status"`
		Data   []string `json:"data"`
		Error  string   `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, errors.New(r.Error)
	}
	return r.Data, nil
}

func (p *prometheus) waitTargetsUp(t *testing.T, timeout time.Duration) {
	t.Helper()
	var last string
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		data, err := p.api("/api/v1/targets", url.Values{})
		if err == nil {
			var r struct {
				ActiveTargets []struct {
					Labels    map[string]string `json:"labels"`
					Health    string            `json:"health"`
					LastError string            `json:"lastError"`
				} `json:"activeTargets"`
			}
			if err = json.Unmarshal(data, &r); err == nil {
				up := 0
				last = ""
				for _, tg := range r.ActiveTargets {
					if tg.Health == "up" {
						up++
					}
					last += fmt.Sprintf(" %s=%s %s", tg.Labels["job"], tg.Health, tg.LastError)
				}
				if up >= 2 && up == len(r.ActiveTargets) {
					return
				}
			}
		}
		if err != nil {
			last = err.Error()
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("Prometheus' targets (deploy/prometheus.yml's jobs) not all up after %s:%s", timeout, last)
}

func (p *prometheus) waitData(t *testing.T, expr string, timeout time.Duration) {
	t.Helper()
	var err error
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var r queryResult
		if r, err = p.query(expr); err == nil && r.hasData() {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("Prometheus has no data for %s after %s (last error: %v)", expr, timeout, err)
}

// ---------------------------------------------------------------------------------------------
// Traffic

type bearer struct {
	token string
	rt    http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}

func client(t *testing.T, api, ispb, subject string) dictv1connect.CoreDictServiceClient {
	t.Helper()
	tok, err := rpc.IssueToken([]byte(jwtSecret), subject, ispb,
		[]string{rpc.ScopeRead, rpc.ScopeWrite, rpc.ScopeLookup, rpc.ScopeClaims}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: bearer{tok, http.DefaultTransport}, Timeout: 30 * time.Second}
	return dictv1connect.NewCoreDictServiceClient(hc, api)
}

// call runs fn, waiting out the rate limiters' refusals (RATE_LIMIT_ACCOUNT_RPS is low here).
func call[Req, Res any](t *testing.T, fn func(context.Context, *Req) (*Res, error), req *Req) (*Res, error) {
	t.Helper()
	for i := 0; ; i++ {
		res, err := fn(context.Background(), req)
		if connect.CodeOf(err) != connect.CodeResourceExhausted || i == 100 {
			return res, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func must[Res any](t *testing.T, what string, res *Res, err error) *Res {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return res
}

func wantCode(t *testing.T, what string, err error, code connect.Code) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Fatalf("%s: got %v, want code %s", what, err, code)
	}
}

func makeTraffic(t *testing.T, api, ispbA, ispbB string) {
	t.Helper()
	a, b := client(t, api, ispbA, "dash-a"), client(t, api, ispbB, "dash-b")
	cpf := newCPF()
	owner := &dictv1.Owner{Type: dictv1.OwnerType_OWNER_TYPE_NATURAL_PERSON, TaxId: cpf, Name: "Maria da Silva"}
	keys := []struct {
		kt  dictv1.KeyType
		key string
	}{
		{dictv1.KeyType_KEY_TYPE_CPF, cpf},
		{dictv1.KeyType_KEY_TYPE_EMAIL, "dash" + randDigits(8) + "@example.com.br"},
		{dictv1.KeyType_KEY_TYPE_PHONE, "+55619" + randDigits(8)},
	}
	for _, k := range keys {
		res, err := call(t, a.CreateKey, &dictv1.CreateKeyRequest{RequestId: uuid.NewString(), KeyType: k.kt, Key: k.key,
			Account: account(ispbA), Owner: owner})
		must(t, "CreateKey", res, err)
	}
	for _, k := range keys {
		waitKey(t, a, k.key, dictv1.EntryStatus_ENTRY_STATUS_ACTIVE)
	}
	// Refusals: a key nobody has, a malformed phone.
	_, err := call(t, a.GetKey, &dictv1.GetKeyRequest{Key: "nobody" + randDigits(6) + "@example.com.br"})
	wantCode(t, "GetKey of a missing key", err, connect.CodeNotFound)
	_, err = call(t, a.CreateKey, &dictv1.CreateKeyRequest{RequestId: uuid.NewString(), KeyType: dictv1.KeyType_KEY_TYPE_PHONE,
		Key: "61999999999", Account: account(ispbA), Owner: owner})
	wantCode(t, "CreateKey of a malformed phone", err, connect.CodeInvalidArgument)
	_, _ = call(t, a.ListKeys, &dictv1.ListKeysRequest{OwnerTaxId: cpf, PageSize: 10})

	// B's payers look A's keys up (found here), and keys nobody holds (the directory answers).
	for i, k := range keys {
		e2e := fmt.Sprintf("E%s202611271530%011d", ispbB, i)
		res, err := call(t, b.LookupKey, &dictv1.LookupKeyRequest{Key: k.key, PayerId: newCPF(), EndToEndId: e2e})
		must(t, "LookupKey", res, err)
	}
	_, err = call(t, b.LookupKey, &dictv1.LookupKeyRequest{Key: "nobody" + randDigits(6) + "@example.com.br", PayerId: newCPF(),
		EndToEndId: fmt.Sprintf("E%s202611271530%011d", ispbB, 99)})
	wantCode(t, "LookupKey of a key nobody holds", err, connect.CodeNotFound)
	chk, err := call(t, b.CheckKeys, &dictv1.CheckKeysRequest{Keys: []string{keys[0].key, keys[1].key}})
	must(t, "CheckKeys", chk, err)

	// B claims A's phone for the same owner (portability), through the directory.
	reqID := uuid.NewString()
	cl, err := call(t, b.CreateClaim, &dictv1.CreateClaimRequest{RequestId: reqID, Type: dictv1.ClaimType_CLAIM_TYPE_PORTABILITY,
		KeyType: keys[2].kt, Key: keys[2].key, ClaimerAccount: account(ispbB), Claimer: owner})
	must(t, "CreateClaim", cl, err)
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := call(t, b.GetClaim, &dictv1.GetClaimRequest{Id: reqID})
		if err == nil && c.GetClaim().GetStatus() == dictv1.ClaimStatus_CLAIM_STATUS_OPEN && c.GetClaim().GetPendingOperation() == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the claim is not OPEN after 60s: %v %v", c.GetClaim(), err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	sync, err := call(t, a.GetSyncStatus, &dictv1.GetSyncStatusRequest{})
	must(t, "GetSyncStatus", sync, err)

	// A burst on one account, beyond RATE_LIMIT_ACCOUNT_RPS: some are refused.
	burst := client(t, api, ispbA, "dash-burst-"+randDigits(6))
	refused := 0
	for i := 0; i < 200 && refused < 5; i++ {
		_, err := burst.CheckKeys(context.Background(), &dictv1.CheckKeysRequest{Keys: []string{keys[0].key}})
		switch connect.CodeOf(err) {
		case connect.CodeResourceExhausted:
			refused++
		default:
			if err != nil {
				t.Fatalf("CheckKeys in the burst: %v", err)
			}
		}
	}
	if refused == 0 {
		t.Fatal("200 CheckKeys on one account at RATE_LIMIT_ACCOUNT_RPS=10: none refused")
	}
}

func waitKey(t *testing.T, c dictv1connect.CoreDictServiceClient, key string, st dictv1.EntryStatus) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := call(t, c.GetKey, &dictv1.GetKeyRequest{Key: key})
		if err == nil && res.GetEntry().GetStatus() == st {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %s not %s after 60s: %v %v", dict.MaskForLog(key), st, res.GetEntry().GetStatus(), err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func account(ispb string) *dictv1.Account {
	return &dictv1.Account{Participant: ispb, Branch: "0001", Number: randDigits(8),
		Type: dictv1.AccountType_ACCOUNT_TYPE_CACC, OpenedAt: timestamppb.New(time.Date(2020, 1, 2, 0, 0, 0, 0, time.UTC))}
}

func newCPF() string {
	for {
		d := randDigits(9)
		for _, w := range []int{10, 11} {
			sum := 0
			for i := 0; i < w-1; i++ {
				sum += int(d[i]-'0') * (w - i)
			}
			d += strconv.Itoa(sum * 10 % 11 % 10)
		}
		if dict.ValidCPF(d) {
			return d
		}
	}
}

func randDigits(n int) string {
	var sb strings.Builder
	for range n {
		v, _ := rand.Int(rand.Reader, big.NewInt(10))
		sb.WriteByte(byte('0' + v.Int64()))
	}
	return sb.String()
}

// ---------------------------------------------------------------------------------------------
// Processes

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: run `scripts/deps.sh up prometheus` (Debian's prometheus package; `make test` does): %v", name, err)
	}
	return p
}

func buildCoreDict(t *testing.T, root string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "core-dict")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build core-dict: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startProcess runs bin with args and env (added to the test's environment), its output in a
// file shown when the test fails, and stops it (SIGTERM, then SIGKILL after 30s) when the test
// ends.
func startProcess(t *testing.T, name, bin string, args, env []string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-done:
			t.Errorf("%s exited before the test ended: %v", name, err)
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Errorf("%s did not stop within 30s of SIGTERM", name)
			}
		}
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				if len(b) > 6000 {
					b = b[len(b)-6000:]
				}
				t.Logf("---- end of %s's output ----\n%s", name, b)
			}
		}
	})
}

func waitHTTP(t *testing.T, u string, timeout time.Duration) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	var last error
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		res, err := c.Get(u)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("HTTP %d", res.StatusCode)
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s not answering 200 after %s: %v", u, timeout, last)
}

func httpGet(t *testing.T, u string) []byte {
	t.Helper()
	c := http.Client{Timeout: 30 * time.Second}
	res, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d, %v", u, res.StatusCode, err)
	}
	return b
}

func boolKeys(m map[string]string) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
