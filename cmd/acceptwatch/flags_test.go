package main

import (
	"errors"

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
		{[]string{"-port", "443", "-P", "80"}, []uint16{80, 443}, []string{"443", "80"}},
		{[]string{"-port", "8000-8003"}, []uint16{8000, 8001, 8002, 8003}, []string{"8000-8003"}},
		{[]string{"-port", "22,20-23"}, []uint16{20, 21, 22, 23}, []string{"22", "20-23"}},
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
		{[]string{"-o", "top", "--refresh", "10ms"}, "--refresh"},
		{[]string{"--refresh", "2s"}, "--refresh goes with -o top"},
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
	for _, frag := range []string{"-port 80", "--attach", "Examples:", "--max-addresses", "-o top", "--refresh"} {
		if !strings.Contains(out.String(), frag) {
			t.Errorf("help lacks %q", frag)
		}
	}
	if strings.Contains(out.String(), "ready-file") {
		t.Errorf("help shows the hidden test hook")
	}
}
