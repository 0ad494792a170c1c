package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// AptSource is one "deb" entry of the machine's apt configuration.
type AptSource struct {
	URI    string
	Suites []string
}

// parseDeb822Sources parses a deb822 *.sources file (sources.list(5)).
// Only enabled "deb" stanzas are returned.
func parseDeb822Sources(r io.Reader) []AptSource {
	var out []AptSource
	fields := map[string]string{}
	last := ""
	flush := func() {
		defer func() { fields = map[string]string{}; last = "" }()
		if len(fields) == 0 {
			return
		}
		if strings.EqualFold(strings.TrimSpace(fields["enabled"]), "no") {
			return
		}
		if !containsWord(fields["types"], "deb") {
			return
		}
		for _, uri := range strings.Fields(fields["uris"]) {
			out = append(out, AptSource{URI: strings.TrimRight(uri, "/"), Suites: strings.Fields(fields["suites"])})
		}
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && last != "" {
			fields[last] += " " + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		last = strings.ToLower(strings.TrimSpace(k))
		fields[last] = strings.TrimSpace(v)
	}
	flush()
	return out
}

// parseOneLineSources parses the classic one-line sources.list format:
// "deb [options] uri suite [component...]".
func parseOneLineSources(r io.Reader) []AptSource {
	var out []AptSource
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) < 2 {
			continue
		}
		out = append(out, AptSource{URI: strings.TrimRight(f[0], "/"), Suites: []string{f[1]}})
	}
	return out
}

func containsWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// systemAptSources reads the machine's own apt sources below root ("/" normally).
func systemAptSources(root string) []AptSource {
	var out []AptSource
	if f, err := os.Open(filepath.Join(root, "etc/apt/sources.list")); err == nil {
		out = append(out, parseOneLineSources(f)...)
		f.Close()
	}
	lists, _ := filepath.Glob(filepath.Join(root, "etc/apt/sources.list.d/*.list"))
	debs, _ := filepath.Glob(filepath.Join(root, "etc/apt/sources.list.d/*.sources"))
	sort.Strings(lists)
	sort.Strings(debs)
	for _, p := range lists {
		if f, err := os.Open(p); err == nil {
			out = append(out, parseOneLineSources(f)...)
			f.Close()
		}
	}
	for _, p := range debs {
		if f, err := os.Open(p); err == nil {
			out = append(out, parseDeb822Sources(f)...)
			f.Close()
		}
	}
	return out
}

// Mirrors holds the two Debian archives the kernels come from.
type Mirrors struct {
	Archive  string // serves e.g. "bookworm", "trixie-backports"
	Security string // serves e.g. "bookworm-security"
}

// pickMirrors chooses, among the machine's sources, the URI that serves a
// plain release suite (e.g. "bookworm") as the Debian archive, and the one
// serving "<release>-security" as the security archive.
func pickMirrors(srcs []AptSource) (Mirrors, error) {
	var m Mirrors
	for _, s := range srcs {
		if !strings.Contains(s.URI, "://") { // cdrom:, file: etc.
			continue
		}
		for _, suite := range s.Suites {
			switch {
			case strings.HasSuffix(suite, "-security") || strings.HasSuffix(suite, "/updates"):
				if m.Security == "" {
					m.Security = s.URI
				}
			case !strings.ContainsAny(suite, "-/"):
				if m.Archive == "" {
					m.Archive = s.URI
				}
			}
		}
	}
	if m.Archive == "" || m.Security == "" {
		return m, fmt.Errorf("could not find both the Debian archive and the security archive in the apt sources (found archive=%q security=%q); set VMTEST_DEBIAN_ARCHIVE and VMTEST_DEBIAN_SECURITY", m.Archive, m.Security)
	}
	return m, nil
}

// SystemMirrors returns the Debian mirrors configured on this machine.
// VMTEST_DEBIAN_ARCHIVE / VMTEST_DEBIAN_SECURITY override them.
func SystemMirrors() (Mirrors, error) {
	a, s := os.Getenv("VMTEST_DEBIAN_ARCHIVE"), os.Getenv("VMTEST_DEBIAN_SECURITY")
	if a != "" && s != "" {
		return Mirrors{Archive: a, Security: s}, nil
	}
	m, err := pickMirrors(systemAptSources("/"))
	if a != "" {
		m.Archive = a
	}
	if s != "" {
		m.Security = s
	}
	if m.Archive != "" && m.Security != "" {
		return m, nil
	}
	return m, err
}

// URIFor returns the mirror that serves suite.
func (m Mirrors) URIFor(suite string) string {
	if strings.HasSuffix(suite, "-security") || strings.HasSuffix(suite, "/updates") {
		return m.Security
	}
	return m.Archive
}
