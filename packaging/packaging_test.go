package packaging

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRules: promtool accepts the alerting rules, and their unit tests (each
// alert fires on sample series that should trigger it) pass.
func TestRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	run(t, "prometheus", promtool, "check", "rules", "acceptwatch.rules.yml")
	run(t, "prometheus", promtool, "test", "rules", "acceptwatch.rules.test.yml")
	run(t, "prometheus", promtool, "check", "config", "prometheus.yml")
}

// TestDeb builds the package with `make deb`, installs it with dpkg into an
// empty root (maintainer scripts included: DPKG_ROOT), verifies the unit
// with systemd-analyze against that root, checks the man page and the
// completions, then runs the unit's ExecStart the way the unit does (an
// unprivileged user with exactly its capabilities and no new privileges)
// and scrapes it; finally it purges the package. What this does not show:
// systemd itself starting the unit and applying its sandboxing (systemd is
// not PID 1 on these machines).
func TestDeb(t *testing.T) {
	requireTool(t, "dpkg")
	analyze := requireTool(t, "systemd-analyze")
	out := t.TempDir()
	debPath := strings.TrimSpace(lastLine(run(t, repoRoot(t), "make", "-s", "deb", "DEB_OUT="+out)))
	info := run(t, "", "dpkg-deb", "--field", debPath, "Package", "Architecture", "Depends")
	if !strings.Contains(info, "Package: acceptwatch") || !strings.Contains(info, "Architecture: amd64") {
		t.Errorf("control fields:\n%s", info)
	}
	checkDebFiles(t, debPath)

	// A root with systemd's own units (as a Debian system has), and a dpkg
	// database of its own.
	root := t.TempDir()
	os.Chmod(root, 0o755)
	admin := filepath.Join(root, "var/lib/dpkg")
	for _, d := range []string{"info", "updates", "../../../lib/systemd/system"} {
		if err := os.MkdirAll(filepath.Join(admin, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"status", "available"} {
		os.WriteFile(filepath.Join(admin, f), nil, 0o644)
	}
	run(t, "", "cp", "-a", "/lib/systemd/system/.", filepath.Join(root, "lib/systemd/system/"))
	dpkg := func(args ...string) string {
		return run(t, "", "dpkg", append([]string{"--root=" + root, "--admindir=" + admin, "--force-script-chrootless", "--log=/dev/null"}, args...)...)
	}
	dpkg("-i", debPath)
	if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/acceptwatch.service")); err != nil {
		t.Errorf("installing did not enable the service: %v", err)
	}
	if out := run(t, "", analyze, "verify", "--man=no", "--root="+root, "/lib/systemd/system/acceptwatch.service"); out != "" {
		t.Errorf("systemd-analyze verify:\n%s", out)
	}
	sec := run(t, "", analyze, "security", "--offline=yes", "--root="+root, "acceptwatch.service")
	m := regexp.MustCompile(`Overall exposure level for acceptwatch.service: ([0-9.]+)`).FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("systemd-analyze security:\n%s", sec)
	}
	if v, _ := strconv.ParseFloat(m[1], 64); v > 2.5 {
		t.Errorf("exposure level %v, want at most 2.5 (systemd calls below 4 OK)", v)
	} else {
		t.Logf("systemd-analyze security: exposure level %v", v)
	}

	checkManPage(t, filepath.Join(root, "usr/share/man/man8/acceptwatch.8.gz"))
	checkCompletions(t, filepath.Join(root, "usr/share/bash-completion/completions/acceptwatch"), filepath.Join(root, "usr/share/zsh/vendor-completions/_acceptwatch"))

	t.Run("service", func(t *testing.T) { runUnit(t, root) })

	dpkg("--purge", "acceptwatch")
	for _, f := range []string{"usr/bin/acceptwatch", "lib/systemd/system/acceptwatch.service", "etc/default/acceptwatch",
		"etc/systemd/system/multi-user.target.wants/acceptwatch.service"} {
		if _, err := os.Lstat(filepath.Join(root, f)); err == nil {
			t.Errorf("purge left %s", f)
		}
	}
}

// checkDebFiles: the package holds the binary, the unit, its defaults, the
// man page, the completions and the examples.
func checkDebFiles(t *testing.T, debPath string) {
	t.Helper()
	contents := run(t, "", "dpkg-deb", "--contents", debPath)
	for _, f := range []string{"./usr/bin/acceptwatch", "./lib/systemd/system/acceptwatch.service", "./etc/default/acceptwatch",
		"./usr/share/man/man8/acceptwatch.8.gz", "./usr/share/bash-completion/completions/acceptwatch", "./usr/share/zsh/vendor-completions/_acceptwatch",
		"./usr/share/doc/acceptwatch/examples/acceptwatch.rules.yml", "./usr/share/doc/acceptwatch/examples/grafana-dashboard.json"} {
		if !strings.Contains(contents, " "+f+"\n") {
			t.Errorf("%s lacks %s", debPath, f)
		}
	}
}

// TestDebArm64: `make deb DEB_ARCH=arm64` packages an arm64 binary (its
// ELF machine AArch64, static) with the same files and an arm64
// Architecture field, and the files TestDeb checks and installs.
func TestDebArm64(t *testing.T) {
	requireTool(t, "dpkg")
	out := t.TempDir()
	debPath := strings.TrimSpace(lastLine(run(t, repoRoot(t), "make", "-s", "deb", "DEB_ARCH=arm64", "DEB_OUT="+out)))
	if !strings.HasSuffix(debPath, "_arm64.deb") {
		t.Errorf("package named %s", debPath)
	}
	if info := run(t, "", "dpkg-deb", "--field", debPath, "Architecture"); strings.TrimSpace(info) != "arm64" {
		t.Errorf("Architecture: %q, want arm64", info)
	}
	checkDebFiles(t, debPath)
	root := t.TempDir()
	run(t, "", "dpkg-deb", "-x", debPath, root)
	f, err := elf.Open(filepath.Join(root, "usr/bin/acceptwatch"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 || f.Class != elf.ELFCLASS64 {
		t.Errorf("the packaged binary is %v %v, want an arm64 one", f.Machine, f.Class)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the packaged binary is not static (it names an interpreter)")
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// checkManPage: groff renders it with no warning, and it documents the
// flags and the capabilities.
func checkManPage(t *testing.T, path string) {
	t.Helper()
	requireTool(t, "groff")
	cmd := exec.Command("sh", "-c", "zcat \"$1\" | groff -man -ww -Tutf8", "sh", path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	page, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Errorf("groff: %v\n%s", err, stderr.String())
	}
	text := regexp.MustCompile(".\b").ReplaceAllString(string(page), "") // overstrike
	for _, want := range []string{"--metrics-top-addresses", "CAP_DAC_READ_SEARCH", "acceptwatch.service", "10074"} {
		if !strings.Contains(text, want) {
			t.Errorf("the man page does not mention %s", want)
		}
	}
}

// checkCompletions: bash completes flag names and a flag's values; zsh
// parses its script.
func checkCompletions(t *testing.T, bash, zsh string) {
	t.Helper()
	complete := func(words ...string) string {
		script := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _acceptwatch; echo "${COMPREPLY[*]}"`
		return strings.TrimSpace(run(t, "", "bash", append([]string{"-c", script, "bash", bash, "acceptwatch"}, words...)...))
	}
	if got := complete("--metr"); got != "--metrics --metrics-addr --metrics-top-addresses" {
		t.Errorf("bash: acceptwatch --metr<TAB>: %q", got)
	}
	if got := complete("-o", ""); got != "text json" {
		t.Errorf("bash: acceptwatch -o <TAB>: %q", got)
	}
	if got := complete("--attach", "t"); got != "tracepoint" {
		t.Errorf("bash: acceptwatch --attach t<TAB>: %q", got)
	}
	if got := complete("--port", ""); got != "" {
		t.Errorf("bash: acceptwatch --port <TAB> offers %q, want nothing", got)
	}
	run(t, "", requireTool(t, "zsh"), "-n", zsh)
}

// unit is the [Service] section of a unit file.
type unit map[string][]string

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' {
			continue
		}
		if l[0] == '[' {
			section = l
			continue
		}
		if k, v, ok := strings.Cut(l, "="); ok && section == "[Service]" {
			u[k] = append(u[k], v)
		}
	}
	return u
}

// runUnit starts the installed unit's ExecStart in root as the unit would:
// its EnvironmentFile (the admin's flags), a dynamic user's uid, exactly its
// ambient capabilities and bounding set, no new privileges, its memlock
// limit; then checks that it serves exact metrics.
func runUnit(t *testing.T, root string) {
	requireRoot(t)
	setpriv := requireTool(t, "setpriv")
	u := readUnit(t, filepath.Join(root, "lib/systemd/system/acceptwatch.service"))
	for k, want := range map[string]string{"DynamicUser": "yes", "NoNewPrivileges": "yes", "LimitMEMLOCK": "infinity", "ProtectSystem": "strict"} {
		if !slices.Equal(u[k], []string{want}) {
			t.Errorf("unit: %s=%v, want %s", k, u[k], want)
		}
	}
	caps := strings.Fields(strings.Join(u["AmbientCapabilities"], " "))
	if bound := strings.Fields(strings.Join(u["CapabilityBoundingSet"], " ")); !slices.Equal(caps, bound) ||
		!slices.Equal(caps, []string{"CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH", "CAP_NET_ADMIN"}) {
		t.Fatalf("unit capabilities: ambient %v, bounding %v; want CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH CAP_NET_ADMIN in both", caps, bound)
	}

	// The admin's flags, in the conffile the unit reads.
	srv := listen(t)
	metricsPort := freePort(t)
	envFile := filepath.Join(root, strings.TrimPrefix(u["EnvironmentFile"][0], "-"))
	os.WriteFile(envFile, fmt.Appendf(nil, "ACCEPTWATCH_ARGS=\"--metrics-addr 127.0.0.1:%d -P %d\"\n", metricsPort, srv.port), 0o644)
	env := map[string]string{}
	b, _ := os.ReadFile(envFile)
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			env[k] = strings.Trim(v, `"`)
		}
	}
	var argv []string
	for _, w := range strings.Fields(u["ExecStart"][0]) {
		if strings.HasPrefix(w, "$") {
			argv = append(argv, strings.Fields(env[w[1:]])...)
		} else {
			argv = append(argv, w)
		}
	}
	argv[0] = filepath.Join(root, argv[0])

	var capList []string
	for _, c := range caps {
		capList = append(capList, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	const dynamicUID = "61234" // systemd's dynamic users: 61184-65519
	list := strings.Join(capList, ",")
	// LimitMEMLOCK=infinity (only kernels before 5.11 need it; raising it
	// needs CAP_SYS_RESOURCE, which some sandboxes lack).
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}); err != nil {
		t.Logf("raising RLIMIT_MEMLOCK: %v", err)
	}
	ensureTracefs(t)
	cmd := exec.Command(setpriv, append([]string{"--reuid=" + dynamicUID, "--regid=" + dynamicUID, "--clear-groups",
		"--inh-caps=-all," + list, "--ambient-caps=-all," + list, "--bounding-set=-all," + list, "--no-new-privs", "--"}, argv...)...)
	d := startDaemon(t, cmd)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	waitServing(t, d, metricsURL)
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	for _, want := range []string{"Uid:\t" + dynamicUID, "CapEff:\t000000c000001004", "CapBnd:\t000000c000001004", "NoNewPrivs:\t1"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("the service process lacks %q:\n%s", want, status)
		}
	}
	const n = 7
	srv.connect(t, "127.0.100.3", n)
	srv.wait(t, n)
	body, _ := httpGet(metricsURL)
	// Per-port series carry the socket's network namespace: the test's.
	ns := selfNetNS(t)
	want := fmt.Sprintf("acceptwatch_accepts_total{netns=\"%d\",port=\"%d\"} %d\n", ns, srv.port, n)
	if !strings.Contains(body, want) {
		t.Errorf("the service's metrics lack %q:\n%s", want, grep(body, "acceptwatch_accepts"))
	}
	// CAP_NET_ADMIN: the SYN counter attaches.
	if want := fmt.Sprintf("acceptwatch_syns_total{netns=\"%d\",port=\"%d\"} %d\n", ns, srv.port, n); !strings.Contains(body, want) {
		t.Errorf("the service's metrics lack %q:\n%s", want, grep(body, "syn"))
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		if code := d.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("SIGTERM: exit status %d:\n%s", code, d.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("no exit after SIGTERM")
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// ensureTracefs mounts tracefs if nothing has (systemd does at boot).
func ensureTracefs(t *testing.T) {
	t.Helper()
	b, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(b), " - tracefs ") {
		return
	}
	if err := unix.Mount("nodev", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		t.Fatalf("mounting tracefs: %v", err)
	}
}

// TestDashboard: the Grafana dashboard is well-formed JSON and every metric
// its expressions name is one acceptwatch exports (or a recording rule of
// the rules file).
func TestDashboard(t *testing.T) {
	exported := exportedFamilies(t)
	n := 0
	for _, e := range dashboardExprs(t) {
		for _, name := range metricNames(e) {
			n++
			if !exported[name] {
				t.Errorf("dashboard: %q names %s, which acceptwatch does not export", e, name)
			}
		}
	}
	if n < 15 {
		t.Errorf("only %d metric names found in the dashboard", n)
	}
	// Port and address series are per network namespace: a panel that
	// grouped them without it would add one namespace's port 80 to
	// another's.
	byPort := regexp.MustCompile(`by \(([^)]*)\)`)
	for _, e := range dashboardExprs(t) {
		for _, m := range byPort.FindAllStringSubmatch(e, -1) {
			labels := strings.Split(strings.ReplaceAll(m[1], " ", ""), ",")
			if (slices.Contains(labels, "port") || slices.Contains(labels, "addr")) && !slices.Contains(labels, "netns") {
				t.Errorf("dashboard: %q groups by %s without netns", e, m[1])
			}
		}
		if strings.Contains(e, `port=~`) && !strings.Contains(e, `netns=~`) {
			t.Errorf("dashboard: %q selects ports without the netns variable", e)
		}
	}
	// The alerting rules too (promtool tests them on series of these names).
	rules, err := os.ReadFile("prometheus/acceptwatch.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?:^|[^:a-z_])(acceptwatch_[a-z_]+)`).FindAllStringSubmatch(string(rules), -1) {
		if name := strings.TrimSuffix(m[1], "_bucket"); !exported[name] { // not recording rules' names (a:b:c)
			t.Errorf("rules name %s, which acceptwatch does not export", name)
		}
	}
}

// dashboardExprs are the dashboard's queries, with Grafana's variables
// replaced as Grafana would for "all".
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct{ Query string }
		}
	}
	b, err := os.ReadFile("grafana/acceptwatch.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$instance", ".*", "$port", ".*", "$netns", ".*", "$job", ".*", "$__rate_interval", "1m")
	var out []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			out = append(out, vars.Replace(tg.Expr))
		}
	}
	for _, v := range dash.Templating.List {
		// label_values(metric{...}, label): the metric selector.
		q := strings.TrimSuffix(strings.TrimPrefix(v.Query, "label_values("), ")")
		out = append(out, vars.Replace(q[:strings.LastIndex(q, ",")]))
	}
	return out
}

var (
	promqlWords = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlFuncs = map[string]bool{"sum": true, "max": true, "by": true, "rate": true, "histogram_quantile": true, "topk": true,
		"increase": true, "without": true, "and": true, "or": true, "offset": true, "le": true}
)

// metricNames lists the metric names an expression uses: words outside
// label matchers and grouping clauses that are not PromQL's own.
func metricNames(expr string) []string {
	expr = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]|(by|without) \([a-z_, ]*\)|"[^"]*"`).ReplaceAllString(expr, " ")
	var out []string
	for _, w := range promqlWords.FindAllString(expr, -1) {
		if !promqlFuncs[w] {
			out = append(out, strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(w, "_bucket"), "_count"), "_sum"))
		}
	}
	return out
}

// exportedFamilies scrapes a real acceptwatch (top addresses on, so that
// every family is there) and returns its metric families.
func exportedFamilies(t *testing.T) map[string]bool {
	t.Helper()
	requireRoot(t)
	srv := listen(t)
	port := freePort(t)
	d := startDaemon(t, exec.Command(acceptwatchBin(t), "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port), "--metrics-top-addresses", "3", "-P", strconv.Itoa(srv.port)))
	u := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	waitServing(t, d, u)
	srv.connect(t, "127.0.100.4", 1)
	srv.wait(t, 1)
	body, _ := httpGet(u)
	out := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = true
		}
	}
	// acceptwatch_syns_total is absent where no SYN counter attaches.
	out["acceptwatch_syns_total"] = true
	return out
}

// selfNetNS is the inode of the test's network namespace.
func selfNetNS(t *testing.T) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
