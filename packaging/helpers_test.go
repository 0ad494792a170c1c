package packaging

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests run on the host only (the kernel matrix runs cmd/acceptwatch's
// metrics tests): they need the tools `make test` installs (DEBS), and root
// for anything that traces.

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("needs %s (make deps installs it)", name)
	}
	return p
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs: run the tests with sudo")
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// acceptwatchBin builds acceptwatch once, in a directory any user can read.
func acceptwatchBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "acceptwatch-packaging")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(dir, 0o755)
		builtBin = filepath.Join(dir, "acceptwatch")
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/acceptwatch")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// server accepts and closes connections on a loopback port, counting them.
type server struct {
	port     int
	mu       sync.Mutex
	accepted int
}

func listen(t *testing.T) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &server{port: ln.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			s.mu.Lock()
			s.accepted++
			s.mu.Unlock()
		}
	}()
	return s
}

// connect makes n connections from src and waits until the server
// has accepted all it was sent.
func (s *server) connect(t *testing.T, src string, n int) {
	t.Helper()
	for range n {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()
	}
}

func (s *server) wait(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("server to accept %d connections", n), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.accepted >= n
	})
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// daemon is a background process stopped at the end of the test.
type daemon struct {
	cmd    *exec.Cmd
	output strings.Builder
	mu     sync.Mutex
	done   chan struct{}
}

func (d *daemon) Write(b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.output.Write(b)
}

func (d *daemon) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.output.String()
}

func startDaemon(t *testing.T, cmd *exec.Cmd) *daemon {
	t.Helper()
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d, d
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-d.done
		}
	})
	return d
}

// httpGet fetches a URL; ok is false while nothing answers.
func httpGet(u string) (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode == 200
}

// waitServing waits until url answers 200 or the daemon exits.
func waitServing(t *testing.T, d *daemon, u string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, ok := httpGet(u); ok {
			return
		}
		select {
		case <-d.done:
			t.Fatalf("%s exited: %s", d.cmd.Path, d.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer; output:\n%s", u, d.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// promQuery runs an instant query against a Prometheus server; it returns
// the result's values (a native histogram's count for histograms).
func promQuery(t *testing.T, base, query string) ([]float64, error) {
	t.Helper()
	body, ok := httpGet(base + "/api/v1/query?query=" + url.QueryEscape(query))
	var r struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Value     []any `json:"value"`
				Histogram []any `json:"histogram"`
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, fmt.Errorf("query %q: %v: %s", query, err, body)
	}
	if !ok || r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s %s", query, r.Status, r.Error)
	}
	var out []float64
	for _, s := range r.Data.Result {
		v := s.Value
		if v == nil && len(s.Histogram) == 2 {
			h, _ := s.Histogram[1].(map[string]any)
			v = []any{nil, h["count"]}
		}
		if len(v) == 2 {
			f, _ := strconv.ParseFloat(fmt.Sprint(v[1]), 64)
			out = append(out, f)
		}
	}
	return out, nil
}
