package main

import (
	"errors"
	"runtime/debug"

	"github.com/acceptwatch/acceptwatch/report"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsForms(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		ports []uint16
		names []string
	}{
		{[]string{"-port", "80"}, []uint16{80}, []string{"80"}},
		{[]string{"--port", "80"}, []uint16{80}, []string{"80"}},
		{[]string{"--port=80"}, []uint16{80}, []string{"80"}},
		{[]string{"-port=80"}, []uint16{80}, []string{"80"}},
		{[]string{"-P", "80"}, []uint16{80}, []string{"80"}},
		{[]string{"-port", "80,443"}, []uint16{80, 443}, []string{"80", "443"}},
		{[]string{"-port", "443", "-P", "80"}, []uint16{80, 443}, []string{"80", "443"}},
		{[]string{"-port", "8000-8003"}, []uint16{8000, 8001, 8002, 8003}, []string{"8000-8003"}},
		// Normalised: duplicates once, sorted, adjacent ports as one range.
		{[]string{"-port", "22,20-23"}, []uint16{20, 21, 22, 23}, []string{"20-23"}},
		{[]string{"-P", "80,80"}, []uint16{80}, []string{"80"}},
		{[]string{"-P", "82,80,81", "-P", "443"}, []uint16{80, 81, 82, 443}, []string{"80-82", "443"}},
		{[]string{"-P", "65534-65535,1"}, []uint16{1, 65534, 65535}, []string{"1", "65534-65535"}},
		{[]string{"-port", "65535"}, []uint16{65535}, []string{"65535"}},
		{nil, nil, nil},
	} {
		o, _, err := parseFlags(tc.args)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !slices.Equal(o.portList, tc.ports) || !slices.Equal(o.portNames, tc.names) {
			t.Errorf("%q: ports %v names %v, want %v %v", tc.args, o.portList, o.portNames, tc.ports, tc.names)
		}
	}
}

func TestParseFlagsSingleDashEveryLongFlag(t *testing.T) {
	o, _, err := parseFlags([]string{
		"-pid", "42", "-duration", "5s", "-interval", "1s", "-count", "7", "-top", "3",
		"-quiet", "-output", "json", "-attach", "tracepoint", "-max-addresses", "100", "-verbose", "-ipv6",
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.pid != 42 || o.duration != 5*time.Second || o.interval != time.Second || o.count != 7 ||
		o.top != 3 || !o.quiet || o.output != "json" || o.attach != "tracepoint" ||
		o.maxAddresses != 100 || !o.verbose || !o.ipv6 {
		t.Errorf("single-dash long flags parsed as %+v", o)
	}
	o, _, err = parseFlags([]string{"-no-syn-counter", "-prefix", "16,48", "-group-by", "prefix", "-flood-min", "5",
		"-flood-factor", "4", "-flood-share", "0.5", "-baseline-factor", "2", "-save-baseline", "b.json"})
	if err != nil {
		t.Fatal(err)
	}
	th := o.thresholds()
	if !o.noSynCounter || o.prefixLen != (report.PrefixLen{V4: 16, V6: 48}) || o.groupBy != "prefix" || th.FloodMin != 5 ||
		th.FloodFactor != 4 || th.FloodShare != 0.5 || th.Prefix != o.prefixLen || o.baselineFactor != 2 || o.saveBaseline != "b.json" {
		t.Errorf("flood flags parsed as %+v", o)
	}
	o, _, err = parseFlags([]string{"-output", "top", "-refresh", "250ms"})
	if err != nil {
		t.Fatal(err)
	}
	if o.output != "top" || o.refresh != 250*time.Millisecond {
		t.Errorf("-o top -refresh 250ms parsed as %+v", o)
	}
	// Shorthands still work, alone and clustered.
	o, _, err = parseFlags([]string{"-qv4", "-p", "9", "-o", "json"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.quiet || !o.verbose || !o.ipv4 || o.pid != 9 || o.output != "json" {
		t.Errorf("shorthands parsed as %+v", o)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-port", "0"}, `invalid port "0"`},
		{[]string{"-port", "70000"}, `invalid port "70000"`},
		{[]string{"-port", "abc"}, `invalid port "abc"`},
		{[]string{"-port", "90-80"}, `invalid port range "90-80"`},
		{[]string{"-port", "80-"}, `invalid port "80-"`},
		{[]string{"-port", ""}, `invalid port ""`},
		{[]string{"-o", "yaml"}, `"yaml"`},
		{[]string{"--attach", "kprobe"}, `"kprobe"`},
		{[]string{"-4", "-6"}, "-4 and -6"},
		{[]string{"--top", "-1"}, "--top"},
		{[]string{"--max-addresses", "0"}, "--max-addresses"},
		{[]string{"--duration", "-1s"}, "negative"},
		{[]string{"--nope"}, "nope"},
		{[]string{"80"}, `unexpected argument "80"`},
		{[]string{"-o", "top", "-q"}, "-o top"},
		{[]string{"-o", "top", "--count", "3"}, "-o top"},
		{[]string{"-o", "top", "--interval", "1s"}, "-o top"},
		{[]string{"-o", "top", "--snapshot"}, "-o top"},
		{[]string{"-o", "top", "--metrics"}, "-o top and --metrics exclude each other"},
		{[]string{"-o", "top", "--metrics-addr", ":9999"}, "-o top and --metrics exclude each other"},
		{[]string{"-o", "top", "--refresh", "10ms"}, "--refresh"},
		{[]string{"--refresh", "2s"}, "--refresh goes with -o top"},
		// --netns: what was tried (tracer/netns.Resolve).
		{[]string{"--netns", "aw-no-such"}, "--netns aw-no-such: /run/netns/aw-no-such: no such namespace file"},
		{[]string{"--netns", "/proc/self/ns/uts"}, "--netns /proc/self/ns/uts: /proc/self/ns/uts is not a network namespace"},
		{[]string{"--netns", "1"}, "--netns 1: no network namespace with inode 1"},
		// Numbers and durations: the same wording for every flag, no
		// strconv or time package internals.
		{[]string{"--pid", "-1"}, `invalid --pid "-1": want a process id`},
		{[]string{"-p", "x"}, `invalid --pid "x"`},
		{[]string{"--pid", "0"}, `invalid --pid 0`},
		{[]string{"--count", "-1"}, `invalid --count "-1": want a whole number`},
		{[]string{"--half-open-threshold", "-1"}, `invalid --half-open-threshold "-1"`},
		{[]string{"--max-addresses", "99999999999"}, `invalid --max-addresses "99999999999"`},
		{[]string{"--top", "many"}, `invalid --top "many"`},
		{[]string{"--duration", "soon"}, `invalid --duration "soon": want a duration`},
		{[]string{"--wait-threshold", "5"}, `invalid --wait-threshold "5"`},
		// A flag where a value belongs, or no value at all.
		{[]string{"-port", "--duration", "1s"}, "flag --port needs a value (got the flag --duration)"},
		{[]string{"-P", "-q"}, "flag --port needs a value"},
		{[]string{"-qP", "-d", "1s"}, "flag --port needs a value"},
		{[]string{"--count", "-port", "80"}, "flag --count needs a value"},
		{[]string{"-port"}, "flag --port needs a value"},
		// Windows shorter than the reader can keep to.
		{[]string{"--interval", "1ms"}, "invalid --interval 1ms: the shortest window is 100ms"},
		{[]string{"-i", "99ms"}, "the shortest window is 100ms"},
	} {
		_, _, err := parseFlags(tc.args)
		var u usageError
		if !errors.As(err, &u) {
			t.Errorf("%q: err %v, want a usage error", tc.args, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %q, want one line containing %q", tc.args, err, tc.want)
		}
		for _, internal := range []string{"strconv", "Parse", "time:", "invalid argument"} {
			if strings.Contains(err.Error(), internal) {
				t.Errorf("%q: %q shows Go internals (%q)", tc.args, err, internal)
			}
		}
	}
}

// Values that look like flags but are not, and zeros that mean "no limit".
func TestParseFlagsValuesNotFlags(t *testing.T) {
	o, _, err := parseFlags([]string{"--interval", "100ms", "-d", "0", "-c", "0", "-p", "7", "-P", "-"})
	if err == nil || !strings.Contains(err.Error(), `invalid port "-"`) {
		// "-" is not a flag: it is the (bad) port value, not a missing one.
		t.Errorf(`-P - gave %v, want the port error`, err)
	}
	o, _, err = parseFlags([]string{"--interval", "100ms", "-d", "0", "-c", "0", "-p", "7"})
	if err != nil {
		t.Fatal(err)
	}
	if o.interval != 100*time.Millisecond || o.duration != 0 || o.count != 0 || o.pid != 7 {
		t.Errorf("parsed as %+v", o)
	}
	if _, _, err := parseFlags([]string{"--top", "-1"}); err == nil || !strings.Contains(err.Error(), "invalid --top -1") {
		t.Errorf("--top -1: %v, want the --top range error (a negative number is a value)", err)
	}
}

func TestSingleDashLongLeavesOthers(t *testing.T) {
	fs := newFlagSet(&options{})
	got := singleDashLong(fs, []string{"-port", "80", "-pq", "--", "-port", "-"})
	want := []string{"--port", "80", "-pq", "--", "-port", "-"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestHelpHasExamples(t *testing.T) {
	var out strings.Builder
	if err := run(t.Context(), []string{"-h"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, frag := range []string{"-port 80", "--attach", "Examples:", "--max-addresses", "-o top", "--refresh",
		// What a zero means, for every flag where 0 is allowed.
		"(0: until Ctrl-C)", "(0: no limit)", "(0: only at the end)", "(0: all)", "default every process", "at least 100ms"} {
		if !strings.Contains(out.String(), frag) {
			t.Errorf("help lacks %q", frag)
		}
	}
	if strings.Contains(out.String(), "ready-file") {
		t.Errorf("help shows the hidden test hook")
	}
}

func TestVersionOf(t *testing.T) {
	bi := func(v string, kv ...string) *debug.BuildInfo {
		b := &debug.BuildInfo{Main: debug.Module{Version: v}}
		for i := 0; i+1 < len(kv); i += 2 {
			b.Settings = append(b.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return b
	}
	for _, tc := range []struct {
		bi   *debug.BuildInfo
		want string
	}{
		{bi("v0.0.0-20261122034753-93c081bcce4f+dirty", "vcs.revision", "93c081bcce4f16dd2201340125f3b1512b96057f",
			"vcs.time", "2026-11-22T03:47:53Z", "vcs.modified", "true"),
			"v0.0.0-20261122034753-93c081bcce4f+dirty (commit 93c081bcce4f dirty, 2026-11-22T03:47:53Z)"},
		{bi("v1.2.0", "vcs.revision", "0123456789abcdef", "vcs.modified", "false"), "v1.2.0 (commit 0123456789ab)"},
		{bi("(devel)"), "(devel) (no commit recorded: build from a git clone with go build -buildvcs=true)"},
	} {
		if got := versionOf(tc.bi, ""); got != tc.want {
			t.Errorf("versionOf = %q, want %q", got, tc.want)
		}
	}
	// make build in a worktree: the commit from git describe.
	if got := versionOf(bi("(devel)"), "93c081bcce4f-dirty"); got != "(devel) (commit 93c081bcce4f dirty)" {
		t.Errorf("versionOf with a described commit = %q", got)
	}
}
