package cgroups

import (
	"regexp"
	"strings"
)

// The shapes container runtimes give their cgroups. With systemd managing
// cgroups, runc names a container's scope "<prefix>-<id>.scope" where the
// prefix is the runtime's: docker, cri-containerd (containerd's CRI plugin),
// crio (CRI-O), libpod (podman), nerdctl. Under the cgroupfs driver the
// directory is the bare id (docker: /docker/<id>; kubelet:
// /kubepods/<qos>/pod<uid>/<id>) or "crio-<id>" (CRI-O). Kubernetes pods
// are kubepods[-<qos>]-pod<uid with _ for ->.slice (systemd) or pod<uid>
// (cgroupfs). LXC containers are lxc.payload.<name>.
var (
	scopeRe    = regexp.MustCompile(`^(docker|cri-containerd|crio|libpod|nerdctl)-([0-9a-f]{64})(\.scope)?$`)
	bareIDRe   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	podSlice   = regexp.MustCompile(`^kubepods(?:-[a-z]+)?-pod([0-9a-f_]{36})\.slice$`)
	podDir     = regexp.MustCompile(`^pod([0-9a-f-]{36})$`)
	runtimeFor = map[string]string{
		"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o",
		"libpod": "podman", "nerdctl": "containerd",
	}
)

// Parse reads a cgroup path (as Resolver.Path gives it). The innermost
// container wins (a container's own sub-cgroups, like podman's "container"
// or a systemd inside it, are below its scope); without one, the innermost
// systemd service or scope names the unit.
func Parse(path string) Container {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	var c Container
	for i := len(parts) - 1; i >= 0 && c.Runtime == ""; i-- {
		p := parts[i]
		switch {
		case scopeRe.MatchString(p):
			m := scopeRe.FindStringSubmatch(p)
			c.Runtime, c.ID = runtimeFor[m[1]], m[2][:12]
		case bareIDRe.MatchString(p) && i > 0:
			switch parent := parts[i-1]; {
			case parent == "docker":
				c.Runtime, c.ID = "docker", p[:12]
			case podDir.MatchString(parent):
				// kubelet's cgroupfs driver does not say which runtime
				c.Runtime, c.ID = "cri", p[:12]
			}
		case strings.HasPrefix(p, "lxc.payload."):
			c.Runtime, c.ID = "lxc", strings.TrimPrefix(p, "lxc.payload.")
		}
	}
	if c.Runtime != "" {
		for _, p := range parts {
			if m := podSlice.FindStringSubmatch(p); m != nil {
				c.Pod = strings.ReplaceAll(m[1], "_", "-")
			} else if m := podDir.FindStringSubmatch(p); m != nil {
				c.Pod = m[1]
			}
		}
		return c
	}
	for i := len(parts) - 1; i >= 0; i-- {
		if p := parts[i]; strings.HasSuffix(p, ".service") || strings.HasSuffix(p, ".scope") {
			c.Unit = p
			break
		}
	}
	return c
}

// String is a short label: "docker:3f2a9c1b7d4e", "k8s:9a1c2b3d/3f2a9c1b7d4e"
// (pod uid, then container), "nginx.service", or "" for none.
func (c Container) String() string {
	switch {
	case c.Pod != "":
		pod := c.Pod
		if len(pod) > 8 {
			pod = pod[:8]
		}
		return "k8s:" + pod + "/" + c.ID
	case c.Runtime != "":
		return c.Runtime + ":" + c.ID
	}
	return c.Unit
}
