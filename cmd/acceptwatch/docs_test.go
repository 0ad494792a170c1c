package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestDocs: the man page and the completions name every flag -h shows, and
// nothing else (they are generated from the same flag set). The shells and
// groff check them in packaging/.
func TestDocs(t *testing.T) {
	o := &options{}
	fs := newFlagSet(o)
	outputs := map[string]string{}
	for _, args := range [][]string{{"--man"}, {"--completion", "bash"}, {"--completion", "zsh"}} {
		var out bytes.Buffer
		if err := run(t.Context(), args, &out, &out); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		outputs[strings.Join(args, " ")] = out.String()
	}
	for _, f := range visible(fs) {
		for what, out := range outputs {
			name := "--" + f.Name
			if what == "--man" {
				name = `\-\-` + strings.ReplaceAll(f.Name, "-", `\-`)
			}
			if !strings.Contains(out, name) {
				t.Errorf("%s does not mention %s", what, name)
			}
		}
	}
	for what, out := range outputs {
		if strings.Contains(out, "ready-file") {
			t.Errorf("%s mentions the hidden --ready-file", what)
		}
	}
	if err := run(t.Context(), []string{"--completion", "tcsh"}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), `"tcsh"`) {
		t.Errorf("--completion tcsh: %v", err)
	}
}
