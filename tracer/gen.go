package tracer

// The BPF objects are committed: building acceptwatch needs no clang. `make generate`
// rebuilds them with the pinned clang (BPF2GO_CC, BPF2GO_STRIP) and CI checks
// that the result is unchanged.
//go:generate go tool bpf2go -target bpfel -type event -type addr_key -type addr_stats -type port_stats -type stat -type event_kind -type event_flags acceptwatch ../bpf/acceptwatch.c -- -O2 -g -Wall -Werror -D__TARGET_ARCH_x86 -I../bpf -I/usr/include/x86_64-linux-gnu
