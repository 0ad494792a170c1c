// Command bootcheck runs inside a Debian system booted with systemd in QEMU
// (packaging's TestServiceBoot), where the acceptwatch package was
// installed with dpkg: it waits for the packaged service to serve metrics,
// makes connections to a port of its own, checks that the service counted
// them exactly, reports how systemd runs the service, and powers off. Its
// result is one line on the console starting with "bootcheck:".
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

const (
	metricsURL = "http://127.0.0.1:10074/metrics"
	conns      = 10
)

func main() {
	err := check()
	result := "ok"
	if err != nil {
		result = "FAIL " + strings.Join(strings.Fields(err.Error()), " ")
	}
	// The console, where the test reads it.
	if f, cerr := os.OpenFile("/dev/ttyS0", os.O_WRONLY, 0); cerr == nil {
		fmt.Fprintf(f, "\nbootcheck: %s\n", result)
		f.Close()
	}
	fmt.Printf("bootcheck: %s\n", result)
	exec.Command("systemctl", "poweroff", "--no-block").Run()
}

func check() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if _, err := scrape(); err == nil {
			break
		} else if time.Now().After(deadline) {
			out, _ := exec.Command("systemctl", "status", "--no-pager", "acceptwatch").CombinedOutput()
			return fmt.Errorf("the service serves no metrics: %v; %s", err, out)
		}
		time.Sleep(time.Second)
	}
	for range conns {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, c)
		c.Close()
	}
	time.Sleep(500 * time.Millisecond)
	body, err := scrape()
	if err != nil {
		return err
	}
	// Per-port series carry the socket's network namespace: this one's.
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		return err
	}
	want := fmt.Sprintf("acceptwatch_accepts_total{netns=\"%d\",port=\"%d\"} %d\n", st.Ino, port, conns)
	if !strings.Contains(body, want) {
		return fmt.Errorf("metrics lack %q", strings.TrimSpace(want))
	}
	mode := "?"
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "acceptwatch_attach_info{") {
			mode = l
		}
	}
	show, err := exec.Command("systemctl", "show", "acceptwatch", "-p", "ActiveState,MainPID,User,DynamicUser,NoNewPrivileges").Output()
	if err != nil {
		return err
	}
	props := strings.Fields(string(show))
	var pid string
	for _, p := range props {
		if v, ok := strings.CutPrefix(p, "MainPID="); ok {
			pid = v
		}
	}
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return err
	}
	var proc []string
	for _, l := range strings.Split(string(status), "\n") {
		for _, k := range []string{"Uid:", "CapEff:", "CapBnd:", "NoNewPrivs:", "Seccomp:"} {
			if strings.HasPrefix(l, k) {
				proc = append(proc, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	fmt.Printf("bootcheck: %d connections counted; %s; %s; %s\n", conns, mode, strings.Join(props, " "), strings.Join(proc, "; "))
	if f, err := os.OpenFile("/dev/ttyS0", os.O_WRONLY, 0); err == nil {
		fmt.Fprintf(f, "\nbootcheck: detail %s; %s; %s\n", mode, strings.Join(props, " "), strings.Join(proc, "; "))
		f.Close()
	}
	return nil
}

func scrape() (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(metricsURL)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s", resp.Status)
	}
	return string(b), err
}
