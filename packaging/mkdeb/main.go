// Command mkdeb builds acceptwatch's Debian package with nfpm (`make deb`
// runs it). It is a module of its own so that the packager's dependencies
// stay out of acceptwatch's.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "mkdeb: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	version := flag.String("version", "", "package version (Debian syntax)")
	bin := flag.String("binary", "", "the acceptwatch binary (static)")
	gen := flag.String("generated", "", "directory holding acceptwatch.8.gz, acceptwatch.bash, _acceptwatch (zsh)")
	src := flag.String("packaging", ".", "the packaging/ directory")
	out := flag.String("o", "", "output .deb")
	arch := flag.String("arch", "amd64", "Debian architecture of the binary: amd64 or arm64")
	flag.Parse()
	if *version == "" || *bin == "" || *gen == "" || *out == "" {
		return fmt.Errorf("-version, -binary, -generated and -o are required")
	}
	p := func(dir, name string) string { return filepath.Join(dir, name) }
	file := func(src, dst string, mode os.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, FileInfo: &files.ContentFileInfo{Mode: mode}}
	}
	contents := files.Contents{
		file(*bin, "/usr/bin/acceptwatch", 0o755),
		file(p(*src, "acceptwatch.service"), "/lib/systemd/system/acceptwatch.service", 0o644),
		{Source: p(*src, "acceptwatch.default"), Destination: "/etc/default/acceptwatch", Type: files.TypeConfigNoReplace, FileInfo: &files.ContentFileInfo{Mode: 0o644}},
		file(p(*gen, "acceptwatch.8.gz"), "/usr/share/man/man8/acceptwatch.8.gz", 0o644),
		file(p(*gen, "acceptwatch.bash"), "/usr/share/bash-completion/completions/acceptwatch", 0o644),
		file(p(*gen, "_acceptwatch"), "/usr/share/zsh/vendor-completions/_acceptwatch", 0o644),
		file(p(*src, "prometheus/prometheus.yml"), "/usr/share/doc/acceptwatch/examples/prometheus.yml", 0o644),
		file(p(*src, "prometheus/acceptwatch.rules.yml"), "/usr/share/doc/acceptwatch/examples/acceptwatch.rules.yml", 0o644),
		file(p(*src, "grafana/acceptwatch.json"), "/usr/share/doc/acceptwatch/examples/grafana-dashboard.json", 0o644),
	}
	info := nfpm.WithDefaults(&nfpm.Info{
		Name:        "acceptwatch",
		Arch:        *arch,
		Platform:    "linux",
		Version:     *version,
		Section:     "net",
		Priority:    "optional",
		Maintainer:  "acceptwatch developers <acceptwatch@localhost>",
		Description: "who opens TCP connections to this machine, and what goes wrong\n acceptwatch traces accepted TCP connections with eBPF: accept-queue wait,\n queue length, connections never accepted, half-open handshakes, per port and\n per client. It runs as a Prometheus exporter service (port 10074) with only\n the capabilities it needs.",
		License:     "GPL-2.0 (BPF programs); see the source",
		Overridables: nfpm.Overridables{
			Contents: contents,
			Scripts: nfpm.Scripts{
				PostInstall: p(*src, "debian/postinst"),
				PreRemove:   p(*src, "debian/prerm"),
				PostRemove:  p(*src, "debian/postrm"),
			},
		},
	})
	if err := nfpm.Validate(info); err != nil {
		return err
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return err
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		os.Remove(*out)
		return fmt.Errorf("packaging: %w", err)
	}
	return f.Close()
}
