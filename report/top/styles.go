package top

import (
	"io"
	"os"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
)

// Styles are the few highlights of the screen.
type Styles struct {
	Title   lipgloss.Style // the first line
	Header  lipgloss.Style // table headers
	Sorted  lipgloss.Style // the sort column's header
	Finding lipgloss.Style // finding: lines
	Alert   lipgloss.Style // a counter that says something was dropped
	Status  lipgloss.Style // the key line at the bottom
}

// PlainStyles add nothing: text only (golden files).
func PlainStyles() Styles {
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.Ascii)
	s := r.NewStyle()
	return Styles{Title: s, Header: s, Sorted: s, Finding: s, Alert: s, Status: s}
}

// MonoStyles highlight with bold and reverse video only: what NO_COLOR
// (no-color.org) leaves.
func MonoStyles(r *lipgloss.Renderer) Styles {
	r.SetColorProfile(termenv.ANSI)
	s := r.NewStyle()
	return Styles{
		Title:   s.Bold(true),
		Header:  s.Bold(true),
		Sorted:  s.Bold(true).Reverse(true),
		Finding: s.Bold(true),
		Alert:   s.Bold(true),
		Status:  s.Reverse(true),
	}
}

// ColorStyles use the 16 ANSI colours, which every terminal maps to its theme.
func ColorStyles(r *lipgloss.Renderer) Styles {
	s := r.NewStyle()
	return Styles{
		Title:   s.Bold(true).Foreground(lipgloss.Color("6")),
		Header:  s.Bold(true),
		Sorted:  s.Bold(true).Reverse(true),
		Finding: s.Bold(true).Foreground(lipgloss.Color("1")),
		Alert:   s.Bold(true).Foreground(lipgloss.Color("1")),
		Status:  s.Reverse(true),
	}
}

// StylesFor picks the styles for a terminal written through r: no colour
// when NO_COLOR is set (bold and reverse stay), none at all on a terminal
// without attributes.
func StylesFor(r *lipgloss.Renderer) Styles {
	if os.Getenv("NO_COLOR") != "" {
		return MonoStyles(r)
	}
	if r.ColorProfile() == termenv.Ascii {
		return PlainStyles()
	}
	return ColorStyles(r)
}
