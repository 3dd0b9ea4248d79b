package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/outpost-edge/outpost/node"
	"github.com/outpost-edge/outpost/node/nodetest"
)

// TestLinkMetricsAndAlertRules: a root and a ReadWrite site. After a push at the
// root reached the site, the root exports the site's link (outpost_child_*) and
// the site its own (outpost_link_*), with the counts the copy made; the site's
// sync progress says the same; every series the example alert rules name is among
// what the two export; and once the site is stopped, the root shows it down with
// the message that waits for it. On the way: the management API at a site and the
// admin token at a site are refused saying the root is the place.
func TestLinkMetricsAndAlertRules(t *testing.T) {
	rootCfg := nodetest.Config(t)
	rootCfg.StaleAfter = 3 * time.Second
	root, site, tok := startRootAndSite(t, rootCfg)
	rootURL := "http://" + root.HTTPAddr()
	admin := func(method, path string, body, out any) {
		t.Helper()
		if err := call(method, rootURL+path, nodetest.AdminToken, body, out); err != nil {
			t.Fatal(err)
		}
	}
	siteURL := "http://" + site.HTTPAddr()

	rootAdmin := &authn.Basic{Username: "admin", Password: nodetest.AdminToken}
	d := push(t, root.HTTPAddr(), "app/a:v1", rootAdmin)
	waitFor(t, 30*time.Second, func() error {
		return sameDigest(site.HTTPAddr(), "app/a:v1", d, &authn.Basic{Username: "ci", Password: tok.Password})
	})

	sitea := map[string]string{"child": "sitea"}
	down := map[string]string{"child": "sitea", "direction": "downstream"}
	var rootM, siteM map[string]*dto.MetricFamily
	waitFor(t, 30*time.Second, func() error {
		rootM, siteM = scrapeMetrics(t, rootURL), scrapeMetrics(t, siteURL)
		return expectMetrics(
			want(rootM, "outpost_child_up", sitea, eq(1)),
			want(rootM, "outpost_child_messages_applied_total", down, atLeast(1)),
			want(rootM, "outpost_child_copy_errors_total", down, eq(0)),
			want(rootM, "outpost_child_pending_messages", down, eq(0)),
			want(rootM, "outpost_child_sync_allowed_lag_seconds", sitea, eq(0)),
			want(rootM, "outpost_child_window_open", sitea, eq(1)),
			want(rootM, "outpost_child_last_sync_timestamp_seconds", sitea, recent()),
			want(rootM, "outpost_child_last_report_timestamp_seconds", sitea, recent()),
			want(rootM, "outpost_child_tag_conflicts_total", sitea, eq(0)),
			want(siteM, "outpost_link_up", nil, eq(1)),
			want(siteM, "outpost_link_window_open", nil, eq(1)),
			want(siteM, "outpost_link_messages_applied_total", map[string]string{"direction": "downstream"}, atLeast(1)),
			want(siteM, "outpost_link_pending_messages", map[string]string{"direction": "downstream"}, eq(0)),
			want(siteM, "outpost_link_pending_messages", map[string]string{"direction": "upstream"}, eq(0)),
			want(siteM, "outpost_link_last_sync_timestamp_seconds", map[string]string{"direction": "downstream"}, recent()),
			want(siteM, "outpost_link_copy_errors_total", map[string]string{"direction": "upstream"}, eq(0)),
		)
	})

	var p node.SyncProgress
	if err := call(http.MethodGet, siteURL+"/outpost/v1/sync", nodetest.AdminToken, nil, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Directions) != 2 || !p.Drained() || p.Directions[0].AppliedMessages < 1 || p.Directions[0].MovedBytes == 0 || p.Parent != "root" {
		t.Errorf("sync progress at the site after one copy: %+v", p)
	}

	// Management belongs to the root: a site says so (not a bare 404), and so does
	// its registry to the admin token.
	err := call(http.MethodGet, siteURL+"/outpost/v1/nodes", nodetest.AdminToken, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "421") || !strings.Contains(err.Error(), "node management is at the root only: node sitea is a site under its parent root") {
		t.Errorf("node list at the site: %v", err)
	}
	req, _ := http.NewRequest(http.MethodGet, siteURL+"/outpost/v1/token?service=sitea&scope=repository:app/a:pull", nil)
	req.SetBasicAuth("admin", nodetest.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(resp)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "the admin token works only at the root") || !strings.Contains(body, "--add-client-tokens") {
		t.Errorf("admin token at the site: %d %s", resp.StatusCode, body)
	}

	// One collection, so that the GC series exist; then every series the alert
	// rules name must be exported by the root or the site.
	admin(http.MethodPost, "/outpost/v1/gc", nil, nil)
	rootM = scrapeMetrics(t, rootURL)
	checkAlertRules(t, filepath.Join("..", "deploy", "prometheus", "outpost-alerts.yaml"), rootM, siteM)

	// A site that is gone still shows, at the root, what waits for it.
	shutdown(t, site)
	push(t, root.HTTPAddr(), "app/b:v1", rootAdmin)
	waitFor(t, 30*time.Second, func() error {
		rootM = scrapeMetrics(t, rootURL)
		return expectMetrics(
			want(rootM, "outpost_child_up", sitea, eq(0)),
			want(rootM, "outpost_child_pending_messages", down, eq(1)),
			// The image's content (two random 1 KiB layers and its config), not the
			// queued message's few hundred bytes.
			want(rootM, "outpost_child_pending_bytes", down, atLeast(2048)),
		)
	})
}

// checkAlertRules fails the test with every problem alertRuleProblems finds, and
// makes sure the check itself catches a rule naming a series nobody exports.
func checkAlertRules(t *testing.T, file string, exported ...map[string]*dto.MetricFamily) {
	t.Helper()
	for _, p := range alertRuleProblems(t, file, exported...) {
		t.Error(p)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	rule := "groups:\n  - name: g\n    rules:\n      - alert: Bogus\n        expr: outpost_no_such_series_total > (0\n        for: 5x\n"
	if err := os.WriteFile(bad, []byte(rule), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(alertRuleProblems(t, bad, exported...), "\n"); !strings.Contains(got, "outpost_no_such_series_total") ||
		!strings.Contains(got, "unbalanced") || !strings.Contains(got, `for "5x"`) || !strings.Contains(got, "severity") {
		t.Errorf("the rule check passes a rule it should refuse:\n%s", got)
	}
}

// alertRuleProblems reads a Prometheus rule file and checks each rule's shape and
// that every outpost_* series its expression names is among the exported families
// (a histogram's _bucket/_count/_sum by its family). Without promtool (the
// prometheus module is far too heavy to import for this), the expression's
// syntax is checked only for balanced brackets.
func alertRuleProblems(t *testing.T, file string, exported ...map[string]*dto.MetricFamily) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		return []string{fmt.Sprintf("%s: %v", file, err)}
	}
	var problems []string
	names := regexp.MustCompile(`\boutpost_[a-z_]+`)
	rules := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			rules++
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				problems = append(problems, fmt.Sprintf("%s/%s: a rule needs alert, expr, labels.severity and annotations.summary", g.Name, r.Alert))
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					problems = append(problems, fmt.Sprintf("%s: for %q: %v", r.Alert, r.For, err))
				}
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") || strings.Count(r.Expr, "{") != strings.Count(r.Expr, "}") ||
				strings.Count(r.Expr, "[") != strings.Count(r.Expr, "]") {
				problems = append(problems, fmt.Sprintf("%s: unbalanced brackets in %q", r.Alert, r.Expr))
			}
			for _, name := range names.FindAllString(r.Expr, -1) {
				if !exportedFamily(name, exported) {
					problems = append(problems, fmt.Sprintf("%s names %s, which neither the root nor the site exports", r.Alert, name))
				}
			}
		}
	}
	if rules < 5 && !strings.HasSuffix(file, "bad.yaml") {
		problems = append(problems, fmt.Sprintf("%s: %d rules, want the sync, error and health rules", file, rules))
	}
	return problems
}

func exportedFamily(name string, exported []map[string]*dto.MetricFamily) bool {
	for _, fams := range exported {
		for _, n := range []string{name, strings.TrimSuffix(name, "_bucket"), strings.TrimSuffix(name, "_count"), strings.TrimSuffix(name, "_sum")} {
			if _, ok := fams[n]; ok {
				return true
			}
		}
	}
	return false
}

func scrapeMetrics(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s/metrics: %v", base, err)
	}
	return fams
}

type check func(float64) error

func eq(v float64) check {
	return func(got float64) error {
		if got != v {
			return fmt.Errorf("%v, want %v", got, v)
		}
		return nil
	}
}

func atLeast(v float64) check {
	return func(got float64) error {
		if got < v {
			return fmt.Errorf("%v, want at least %v", got, v)
		}
		return nil
	}
}

// recent is a Unix timestamp within the last minute.
func recent() check {
	return func(got float64) error {
		if age := float64(time.Now().Unix()) - got; age < -5 || age > 60 {
			return fmt.Errorf("timestamp %v is %vs old", got, age)
		}
		return nil
	}
}

// want finds the series of family name with exactly labels and checks its value.
func want(fams map[string]*dto.MetricFamily, name string, labels map[string]string, c check) error {
	f, ok := fams[name]
	if !ok {
		return fmt.Errorf("%s: not exported", name)
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		var v float64
		switch {
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		}
		if err := c(v); err != nil {
			return fmt.Errorf("%s%v: %w", name, labels, err)
		}
		return nil
	}
	return fmt.Errorf("%s%v: no such series", name, labels)
}

func expectMetrics(errs ...error) error {
	var out []string
	for _, err := range errs {
		if err != nil {
			out = append(out, err.Error())
		}
	}
	if len(out) > 0 {
		return fmt.Errorf("%s", strings.Join(out, "; "))
	}
	return nil
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// shutdown stops n before the test ends (nodetest's cleanup then finds it stopped).
func shutdown(t *testing.T, n *node.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
