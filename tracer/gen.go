package tracer

// The BPF objects are committed: building acceptwatch needs no clang. `make generate`
// rebuilds them with the pinned clang (BPF2GO_CC, BPF2GO_STRIP) and CI checks
// that the result is unchanged.
//
// One object per architecture: register and calling-convention reads (kprobe
// arguments, a syscall's first argument) differ, see bpf/kernel.h. bpf2go's
// -target defines __TARGET_ARCH_<arch> and tags the Go file with its GOARCH.
// Each architecture gets its own UAPI <asm/*> headers (linux-libc-dev,
// linux-libc-dev-arm64-cross); the rest of <linux/*> is shared.
//go:generate -command bpf2go go tool bpf2go -type event -type addr_key -type addr_stats -type port_stats -type stat -type event_kind -type event_flags -cflags "-O2 -g -Wall -Werror -I../bpf"
//go:generate bpf2go -target amd64 acceptwatch ../bpf/acceptwatch.c -- -idirafter /usr/include/x86_64-linux-gnu
//go:generate bpf2go -target arm64 acceptwatch ../bpf/acceptwatch.c -- -idirafter /usr/aarch64-linux-gnu/include
