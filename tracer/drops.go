package tracer

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
)

// listenOverflowReason is the kernel's drop reason for a packet dropped
// because the listener's queue was full (6.15+): the final ACK of a
// handshake that found the accept queue full.
const listenOverflowReason = "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW"

// attachDropCounter loads aw_drop on tp_btf/kfree_skb with the drop reason's
// number for this kernel, read by name from its BTF (it differs between
// kernels). Kernels without the reason get no program.
func (e *extras) attachDropCounter(spec *ebpf.CollectionSpec, opts ebpf.CollectionOptions, cache *btf.Cache, logf func(string, ...any)) error {
	kernel, err := cache.Kernel()
	if err != nil {
		return fmt.Errorf("reading kernel BTF: %w", err)
	}
	reason, err := enumValue(kernel, "skb_drop_reason", listenOverflowReason)
	if err != nil {
		return err
	}
	spec = spec.Copy()
	if err := spec.Variables["listen_overflow_reason"].Set(uint32(reason)); err != nil {
		return fmt.Errorf("setting the drop reason: %w", err)
	}
	// The knob's own read-only map is made here, with the value in it.
	repl := make(map[string]*ebpf.Map, len(opts.MapReplacements))
	for name, m := range opts.MapReplacements {
		if name != ".rodata.drop" {
			repl[name] = m
		}
	}
	opts.MapReplacements = repl
	coll, err := loadPrograms(spec, []string{"aw_drop"}, opts)
	if err != nil {
		return fmt.Errorf("loading: %w", err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs["aw_drop"]})
	if err != nil {
		coll.Close()
		return fmt.Errorf("attaching to kfree_skb: %w", err)
	}
	e.colls = append(e.colls, coll)
	e.links = append(e.links, l)
	e.drops = append(e.drops, DropsFinalAck)
	logf("accept-queue drops per address: final ACKs at tp_btf/kfree_skb (%s = %d)", listenOverflowReason, reason)
	return nil
}

// enumValue finds the value of one constant of a kernel enum.
func enumValue(spec *btf.Spec, enum, name string) (uint64, error) {
	var e *btf.Enum
	if err := spec.TypeByName(enum, &e); err != nil {
		return 0, fmt.Errorf("kernel BTF has no enum %s: %w", enum, err)
	}
	for _, v := range e.Values {
		if v.Name == name {
			return v.Value, nil
		}
	}
	return 0, fmt.Errorf("this kernel has no %s (added in 6.15)", name)
}
