package report

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sanitize makes a kernel-supplied string (such as a task comm) safe to print.
//
// The string is first cut at its first NUL byte (kernel comms are
// NUL-padded). Then every byte of a non-printable rune (C0 controls, DEL,
// C1 controls and other runes unicode.IsPrint rejects, e.g. bidi overrides)
// and every invalid UTF-8 byte is written as \xNN (lowercase hex), and a
// backslash becomes \\. All other printable Unicode is kept. The result is
// valid UTF-8, contains only printable runes, and can be decoded back to
// the original bytes unambiguously.
//
// If s needs no escaping, the result shares s's memory (no allocation).
func Sanitize(s string) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	// Fast path: find the first byte that needs an escape.
	i := 0
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f || c == '\\' {
				break
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || !unicode.IsPrint(r) {
			break
		}
		i += size
	}
	if i == len(s) {
		return s
	}

	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\\':
				b.WriteString(`\\`)
			case c < 0x20 || c == 0x7f:
				writeHexByte(&b, c)
			default:
				b.WriteByte(c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || !unicode.IsPrint(r) {
			for j := i; j < i+size; j++ {
				writeHexByte(&b, s[j])
			}
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func writeHexByte(b *strings.Builder, c byte) {
	const hex = "0123456789abcdef"
	b.WriteString(`\x`)
	b.WriteByte(hex[c>>4])
	b.WriteByte(hex[c&0xf])
}
