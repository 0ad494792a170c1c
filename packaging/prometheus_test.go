package packaging

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startPrometheus runs Debian's Prometheus on a loopback port with a
// temporary config and data directory, scraping target every second and
// loading the alerting rules. It is stopped at the end of the test.
func startPrometheus(t *testing.T, target string, native bool) string {
	t.Helper()
	prom := requireTool(t, "prometheus")
	dir := t.TempDir()
	rules, err := filepath.Abs("prometheus/acceptwatch.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: acceptwatch
    static_configs:
      - targets: [%q]
`, rules, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"--config.file=" + filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr, "--log.level=warn"}
	if native {
		args = append(args, "--enable-feature=native-histograms")
	}
	d := startDaemon(t, exec.Command(prom, args...))
	base := "http://" + addr
	waitServing(t, d, base+"/-/ready")
	return base
}

// waitQuery polls a query until it returns exactly want (one series).
func waitQuery(t *testing.T, base, query string, want float64) {
	t.Helper()
	var got []float64
	var err error
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if got, err = promQuery(t, base, query); err == nil && len(got) == 1 && got[0] == want {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Errorf("%s: %v (%v), want %v", query, got, err, want)
}

// TestPrometheus: two real Prometheus servers scrape acceptwatch, one with
// classic histograms (text format) and one with native histograms
// (protobuf). After N connections the accepts counter of the port is exactly
// N in both, and the queue-wait histogram holds N observations in both
// forms; the rules load and evaluate; every dashboard query is valid PromQL
// that returns data; promtool finds nothing to say about a real scrape.
func TestPrometheus(t *testing.T) {
	requireRoot(t)
	promtool := requireTool(t, "promtool")
	srv := listen(t)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	aw := startDaemon(t, exec.Command(acceptwatchBin(t), "--metrics-addr", metricsAddr, "-P", strconv.Itoa(srv.port), "--metrics-top-addresses", "5"))
	waitServing(t, aw, "http://"+metricsAddr+"/metrics")
	classic := startPrometheus(t, metricsAddr, false)
	native := startPrometheus(t, metricsAddr, true)
	for _, base := range []string{classic, native} {
		waitQuery(t, base, `up{job="acceptwatch"}`, 1)
	}

	const n = 25
	for i := range 5 {
		srv.connect(t, fmt.Sprintf("127.0.100.%d", 20+i), n/5)
	}
	srv.wait(t, n)
	port := strconv.Itoa(srv.port)
	for _, base := range []string{classic, native} {
		waitQuery(t, base, `acceptwatch_accepts_total{port="`+port+`"}`, n)
		waitQuery(t, base, `acceptwatch_handshakes_total{port="`+port+`"}`, n)
	}
	waitQuery(t, classic, `acceptwatch_queue_wait_seconds_count{port="`+port+`"}`, n)
	waitQuery(t, classic, `acceptwatch_queue_wait_seconds_bucket{port="`+port+`", le="+Inf"}`, n)
	waitQuery(t, native, `histogram_count(acceptwatch_queue_wait_seconds{port="`+port+`"})`, n)
	waitQuery(t, native, `count(acceptwatch_address_accepts_total)`, 5)

	// The rules load and evaluate without error.
	body, _ := httpGet(classic + "/api/v1/rules")
	if strings.Count(body, `"health":"ok"`) != 8 || strings.Contains(body, `"health":"err`) {
		t.Errorf("rules: want 8 healthy rules:\n%s", body)
	}

	// Let rate() see two scrapes after the traffic, then run every dashboard
	// query on the server that stores each form of the histogram it uses.
	time.Sleep(2 * time.Second)
	for _, e := range dashboardExprs(t) {
		base := classic
		if strings.Contains(e, "acceptwatch_queue_wait_seconds") && !strings.Contains(e, "_bucket") {
			base = native
		}
		got, err := promQuery(t, base, e)
		switch {
		case err != nil:
			t.Errorf("dashboard query: %v", err)
		case len(got) == 0 && !strings.Contains(e, "acceptwatch_syns_total"): // SYNs: absent without a SYN counter (CAP_NET_ADMIN, cgroup v2)
			t.Errorf("dashboard query returns nothing: %s", e)
		}
	}

	// promtool's lint on a real scrape.
	scrapeBody, _ := httpGet("http://" + metricsAddr + "/metrics")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrapeBody)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	t.Logf("scrape excerpt:\n%s", grep(scrapeBody, `port="`+port+`"`))
}
