// Package packaging holds what acceptwatch ships beside its binary: the
// systemd unit, the Debian package's scripts, a Prometheus scrape config and
// alerting rules, and a Grafana dashboard. mkdeb/ (a module of its own, to
// keep the packager out of acceptwatch's dependencies) builds the .deb;
// `make deb` runs it. The tests here check all of it with the real tools:
// systemd-analyze, dpkg, promtool, a Prometheus server.
package packaging
