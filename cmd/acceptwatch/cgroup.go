package main

import (
	"errors"
	"fmt"

	"github.com/acceptwatch/acceptwatch/tracer/cgroups"
)

// resolveCgroup turns --cgroup (a cgroup v2 directory, absolute or relative
// to the mount) into the cgroup the kernel filters by. A bad path is a usage
// error; a host without cgroup v2, or a cgroup namespace that hides the
// levels, is a runtime one (the command line is right, the host cannot).
func resolveCgroup(dir string) (cgroups.Target, error) {
	t, err := cgroups.ResolveTarget(dir)
	if errors.Is(err, cgroups.ErrNoV2) || errors.Is(err, cgroups.ErrCgroupNS) {
		return t, fmt.Errorf("--cgroup %s: %w", dir, err)
	}
	if err != nil {
		return t, usagef("--cgroup %s: %v", dir, err)
	}
	return t, nil
}
