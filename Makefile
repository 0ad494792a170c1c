# acceptwatch. `sudo make test` on a fresh Debian bookworm machine installs what
# the tests need (apt), checks the generated BPF objects, runs the host tests
# and the kernel matrix in QEMU.

.PHONY: build test unit e2e deps generate check-generated vmtest bench deb

# The pinned BPF toolchain; `make generate` output is committed.
CLANG ?= clang-14
STRIP ?= llvm-strip-14
# prometheus (server and promtool), systemd (systemd-analyze), zsh, debootstrap: packaging/ tests; tmux: the live table's.
DEBS := clang-14 llvm-14 libbpf-dev linux-libc-dev linux-libc-dev-arm64-cross qemu-system-x86 qemu-system-arm iproute2 prometheus systemd zsh debootstrap tmux

build:
	go build -buildvcs=true -ldflags "-X main.buildCommit=$$(git describe --always --dirty --abbrev=12 --exclude '*' 2>/dev/null)" -o acceptwatch ./cmd/acceptwatch

test: deps check-generated
	go vet ./...
	GOARCH=arm64 go vet ./...
	go test -count=1 ./...
	$(MAKE) vmtest

deps:
	@dpkg -s $(DEBS) >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEBS); }

generate:
	BPF2GO_CC=$(CLANG) BPF2GO_STRIP=$(STRIP) go generate ./tracer

# CI: the committed objects must be what the pinned clang makes of bpf/.
check-generated: generate
	@git diff --exit-code --stat -- tracer/ || { echo "generated BPF objects are stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- tracer/)" || { git status --short -- tracer/; echo "untracked generated files"; exit 1; }

# Kernel matrix (vmtest/README.md). Packages holding kernel tests:
VMTEST_PACKAGES ?= ./cmd/acceptwatch
# Optional: KERNELS=6.1 ARCHES=arm64 MODES=fexit (comma-separated) to run a subset.

vmtest:
	go run ./vmtest/cmd/matrix -packages "$(VMTEST_PACKAGES)" $(if $(KERNELS),-kernels "$(KERNELS)") $(if $(ARCHES),-arches "$(ARCHES)") $(if $(MODES),-modes "$(MODES)")

# The Debian package (packaging/): a static binary, the systemd unit, the man
# page and completions the binary generates from its own flags, examples.
# nfpm builds it (packaging/mkdeb, a module of its own). Output in DEB_OUT.
# DEB_ARCH=arm64 packages an arm64 binary (the man page and completions,
# the same on every architecture, come from a build for this machine).
DEB_OUT ?= build
DEB_ARCH ?= amd64
DEB_VERSION ?= 0.1.0~git$(shell git log -1 --format=%cd.%h --date=format:%Y%m%d 2>/dev/null || echo 0)
DEB_LDFLAGS = -s -w -X main.buildCommit=$$(git describe --always --dirty --abbrev=12 --exclude '*' 2>/dev/null)
deb:
	@mkdir -p $(DEB_OUT)/deb/$(DEB_ARCH)
	CGO_ENABLED=0 GOARCH=$(DEB_ARCH) go build -trimpath -ldflags="$(DEB_LDFLAGS)" -o $(DEB_OUT)/deb/$(DEB_ARCH)/acceptwatch ./cmd/acceptwatch
	CGO_ENABLED=0 go build -trimpath -ldflags="$(DEB_LDFLAGS)" -o $(DEB_OUT)/deb/acceptwatch-docs ./cmd/acceptwatch
	$(DEB_OUT)/deb/acceptwatch-docs --man | gzip -9n > $(DEB_OUT)/deb/acceptwatch.8.gz
	$(DEB_OUT)/deb/acceptwatch-docs --completion bash > $(DEB_OUT)/deb/acceptwatch.bash
	$(DEB_OUT)/deb/acceptwatch-docs --completion zsh > $(DEB_OUT)/deb/_acceptwatch
	cd packaging/mkdeb && go run . -version '$(DEB_VERSION)' -arch $(DEB_ARCH) -binary $(abspath $(DEB_OUT))/deb/$(DEB_ARCH)/acceptwatch \
		-generated $(abspath $(DEB_OUT))/deb -packaging .. -o $(abspath $(DEB_OUT))/acceptwatch_$(DEB_VERSION)_$(DEB_ARCH).deb
	@echo $(DEB_OUT)/acceptwatch_$(DEB_VERSION)_$(DEB_ARCH).deb

# Benchmark (cmd/acceptbench, needs root): start-up, added CPU per connection
# against nothing traced and a bpftrace script (also inside QEMU for the fexit
# and kretprobe modes), kernel cost per program, 1M addresses, snapshots, the
# live table's refresh with 100,000 addresses (in tmux).
# About 27 minutes. BENCH_FLAGS="-markdown bench.md" also writes markdown;
# BENCH_FLAGS="-sections cpu" runs one part. The snapshot section compares
# with netstat (net-tools) and measures peak RSS with GNU time.
BENCH_DEBS := net-tools time iproute2 bpftrace tmux

bench:
	@dpkg -s $(BENCH_DEBS) >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BENCH_DEBS); }
	go run ./cmd/acceptbench $(BENCH_FLAGS)
