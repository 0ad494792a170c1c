package report

import (
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestSanitize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nginx", "nginx"},
		{"", ""},
		{"with space", "with space"},
		{"héllo wörld ✓ 日本", "héllo wörld ✓ 日本"},
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"a\nb", `a\x0ab`},
		{"a\tb\r", `a\x09b\x0d`},
		{"del\x7f", `del\x7f`},
		{"c1\u0085nel", `c1\xc2\x85nel`},
		{"csi\u009b2J", `csi\xc2\x9b2J`},
		{"bad\xff\xfeutf8\xc3", `bad\xff\xfeutf8\xc3`},
		{"\xc3\x28", `\xc3(`},
		{`back\slash`, `back\\slash`},
		{`\x41`, `\\x41`}, // escape-looking input cannot be confused with an escape
		{"comm\x00\x00\x00\x00", "comm"},
		{"cut\x00\x1bafter", "cut"},
		{"\x00all", ""},
		{"rlo\u202eevil", `rlo\xe2\x80\xaeevil`},
		{"\ufffd", "\ufffd"}, // a literal replacement char is valid, printable
	} {
		if got := Sanitize(tc.in); got != tc.want {
			t.Errorf("Sanitize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSanitizeNoAlloc(t *testing.T) {
	for _, s := range []string{"systemd-journal", "nginx\x00\x00\x00\x00\x00\x00", "日本語プロセス"} {
		if n := testing.AllocsPerRun(100, func() { _ = Sanitize(s) }); n != 0 {
			t.Errorf("Sanitize(%q) allocated %v times", s, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = Sanitize("a\nb") }); n == 0 {
		t.Errorf("escaping path did not allocate: fast path returned input unchanged?")
	}
}

// unsanitize reverses Sanitize's escapes.
func unsanitize(t *testing.T, s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '\\' {
			b.WriteByte('\\')
			i++
			continue
		}
		if i+3 < len(s) && s[i+1] == 'x' {
			v, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
			if err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		t.Fatalf("dangling backslash at %d in %q", i, s)
	}
	return b.String()
}

func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"nginx", "\x1b[2J", "a\x00b", "\xff\xc2\x85", `\\x41`, "\u202e", "日本\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := Sanitize(in)
		if !utf8.ValidString(out) {
			t.Fatalf("Sanitize(%q) = %q: invalid UTF-8", in, out)
		}
		for _, r := range out {
			if unicode.IsControl(r) || !unicode.IsPrint(r) {
				t.Fatalf("Sanitize(%q) = %q: contains %U", in, out, r)
			}
		}
		want := in
		if i := strings.IndexByte(in, 0); i >= 0 {
			want = in[:i]
		}
		if got := unsanitize(t, out); got != want {
			t.Fatalf("Sanitize(%q) = %q does not round-trip: %q", in, out, got)
		}
		if Sanitize(out) != strings.ReplaceAll(out, `\`, `\\`) {
			t.Fatalf("re-sanitizing %q changed more than backslashes", out)
		}
	})
}
