package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// server listens on 127.0.0.1 and accepts and closes with blocking accept()
// calls on dedicated threads, counting what it accepted per remote address.
type server struct {
	fd       int
	port     int
	accepted atomic.Uint64
	wg       sync.WaitGroup
	mu       sync.Mutex
	perAddr  map[[4]byte]uint64 // merged from the acceptors when they end
	// inFlight holds a token per dialed connection not yet accepted: the
	// clients stop at maxInFlight, so the accept queue never overflows (an
	// overflow drops a SYN and stalls that client for its whole timeout,
	// which made rounds of the same setting differ by tens of percent).
	inFlight chan struct{}
}

// maxInFlight bounds the accept queue, far below the listen backlog.
const maxInFlight = 256

func listen(acceptors int) (*server, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	s := &server{fd: fd, perAddr: map[[4]byte]uint64{}, inFlight: make(chan struct{}, maxInFlight)}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return nil, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	s.port = sa.(*unix.SockaddrInet4).Port
	for range acceptors {
		s.wg.Add(1)
		go s.acceptLoop()
	}
	return s, nil
}

func (s *server) acceptLoop() {
	defer s.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	local := map[[4]byte]uint64{}
	for {
		nfd, sa, err := unix.Accept4(s.fd, unix.SOCK_CLOEXEC)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) || errors.Is(err, unix.EMFILE) {
				continue
			}
			break // EINVAL once the listener is shut down
		}
		unix.Close(nfd)
		s.release()
		if a, ok := sa.(*unix.SockaddrInet4); ok {
			local[a.Addr]++
		}
		s.accepted.Add(1)
	}
	s.mu.Lock()
	for k, v := range local {
		s.perAddr[k] += v
	}
	s.mu.Unlock()
}

// release gives back a connection's in-flight token; none is left when a
// client gave up on a connection the server then accepted.
func (s *server) release() {
	select {
	case <-s.inFlight:
	default:
	}
}

// close stops the acceptors (shutdown wakes a blocked accept) and returns the
// per-address counts.
func (s *server) close() map[[4]byte]uint64 {
	unix.Shutdown(s.fd, unix.SHUT_RDWR)
	s.wg.Wait()
	unix.Close(s.fd)
	return s.perAddr
}

// drain waits until the server has accepted every connection the clients
// completed, or until accepts stop coming for a while (a full accept queue
// drops the final ACK, so a client may count a connection the server never
// sees).
func (s *server) drain(connected uint64) {
	last, since := s.accepted.Load(), time.Now()
	for time.Since(since) < 500*time.Millisecond {
		time.Sleep(20 * time.Millisecond)
		n := s.accepted.Load()
		if n >= connected {
			return
		}
		if n != last {
			last, since = n, time.Now()
		}
	}
}

// stormResult is one bounded burst of loopback connections.
type stormResult struct {
	connected, failed uint64
	accepted          uint64 // by the server during the timed window
	elapsed           time.Duration
	slices            []float64     // accepts/s in each sampling slice
	cpu               time.Duration // used by this process and by others[] in the window
	busy              time.Duration // busy CPU time of the whole machine in the window (/proc/stat)
	kthreads          time.Duration // CPU time of kernel threads (softirq, workqueues) in the window
}

// ownPerConn is the CPU this storm caused per accepted connection, in µs:
// this process, the other process counted in cpu, and the kernel's threads;
// unlike busyPerConn, other work on a shared machine is left out.
func (r stormResult) ownPerConn() float64 {
	return float64((r.cpu + r.kthreads).Nanoseconds()) / 1e3 / float64(r.accepted)
}

// busyPerConn is the machine's busy CPU per accepted connection, in µs.
func (r stormResult) busyPerConn() float64 {
	return float64(r.busy.Nanoseconds()) / 1e3 / float64(r.accepted)
}

// efficiency is connections per CPU-second spent by the benchmark and the
// tracer together: unlike the rate, it hardly moves when other work on the
// machine takes CPU away, and on a dedicated saturated machine the with/without
// ratio of efficiencies is the throughput ratio.
func (r stormResult) efficiency() float64 { return float64(r.accepted) / r.cpu.Seconds() }

func selfCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sliceLen is how often a storm samples the server's accept count.
const sliceLen = 100 * time.Millisecond

// rate is the median rate of the storm's slices: other work on a shared
// machine comes in bursts, and a burst then moves a few slices, not the
// result. Storms too short for slices give the mean.
func (r stormResult) rate() float64 {
	if len(r.slices) < 5 {
		return float64(r.accepted) / r.elapsed.Seconds()
	}
	return medianF(r.slices)
}

// source yields the i-th client source address.
type source func(i uint64) [4]byte

// fewSources rotates over n addresses 127.0.1.1, 127.0.1.2, ...
func fewSources(n int) source {
	return func(i uint64) [4]byte {
		j := i % uint64(n)
		return [4]byte{127, 0, byte(1 + j/250), byte(1 + j%250)}
	}
}

// distinctSources gives every connection its own address from 127.1.0.0 on.
func distinctSources(i uint64) [4]byte {
	a := uint32(127<<24|1<<16) + uint32(i)
	return [4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}
}

// storm dials the server from workers concurrent clients until warm+d has
// passed or limit connections (0: no limit) were attempted, then waits for
// the server to drain; the first warm of it is not measured. other, if not
// nil, is the CPU time of another process to count in the storm's CPU. Each client binds its source address, connects with a
// blocking connect and closes with SO_LINGER 0 (an RST: no TIME_WAIT).
func storm(s *server, workers int, src source, warm, d time.Duration, limit uint64, other func() time.Duration) stormResult {
	cpu := func() time.Duration {
		if other == nil {
			return selfCPU()
		}
		return selfCPU() + other()
	}
	var next, connected, failed atomic.Uint64
	var stop atomic.Bool
	var wg sync.WaitGroup
	dst := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: s.port}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for !stop.Load() {
				i := next.Add(1) - 1
				if limit > 0 && i >= limit {
					return
				}
				// Retry a failed dial with the same address, so that
				// distinct-address runs still cover every address.
				for try := 0; try < 3; try++ {
					s.inFlight <- struct{}{}
					if err := dial(src(i), dst); err == nil {
						connected.Add(1)
						break
					}
					failed.Add(1)
					s.release()
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	if warm > 0 {
		time.Sleep(warm)
	}
	start, cpu0, busy0, kt0 := time.Now(), cpu(), machineBusy(), kthreadCPU()
	base := s.accepted.Load()
	var r stormResult
	tick := time.NewTicker(sliceLen)
	defer tick.Stop()
	end := time.After(d)
	last, lastT := base, start
sample:
	for {
		select {
		case <-done:
			break sample
		case <-end:
			break sample
		case now := <-tick.C:
			n := s.accepted.Load()
			r.slices = append(r.slices, float64(n-last)/now.Sub(lastT).Seconds())
			last, lastT = n, now
		}
	}
	r.accepted, r.elapsed, r.cpu, r.busy = s.accepted.Load()-base, time.Since(start), cpu()-cpu0, machineBusy()-busy0
	r.kthreads = kthreadCPU() - kt0
	stop.Store(true)
	<-done
	s.drain(base + connected.Load())
	r.connected, r.failed = connected.Load(), failed.Load()
	return r
}

// userHZ is the unit of /proc/stat: USER_HZ, 100 on every Linux architecture
// that acceptwatch runs on.
const userHZ = 100

// machineBusy is the CPU time every CPU of the machine has spent busy so far:
// user+nice+system+irq+softirq of /proc/stat's "cpu" line (idle, iowait and
// steal are left out; guest time is already inside user).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var ticks uint64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system (idle iowait) irq softirq
		n, _ := strconv.ParseUint(f[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ
}

// kthreadCPU is the CPU time of every kernel thread so far (children of
// kthreadd, PID 2: ksoftirqd, kworkers), from schedstat in nanoseconds. A
// thread that ends between two reads drops out of the sum: kernel threads
// seldom end, and a round's result would then be off by its short life.
func kthreadCPU() time.Duration {
	ents, _ := os.ReadDir("/proc")
	var sum time.Duration
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// After "(comm)", which may hold anything: state ppid ...
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat[i+1:]))
		if i < 0 || len(f) < 2 || (f[1] != "2" && pid != 2) {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/schedstat"); err == nil {
			if g := strings.Fields(string(b)); len(g) > 0 {
				ns, _ := strconv.ParseInt(g[0], 10, 64)
				sum += time.Duration(ns)
			}
		}
	}
	return sum
}

var lingerRST = &unix.Linger{Onoff: 1, Linger: 0}

func dial(src [4]byte, dst *unix.SockaddrInet4) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// Choose the port at connect time, per 4-tuple, not per address at bind.
	_ = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, lingerRST); err != nil {
		return err
	}
	// A dropped SYN would block connect for a second or more.
	tv := unix.NsecToTimeval(int64(500 * time.Millisecond))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src}); err != nil {
		return fmt.Errorf("bind %v: %w", src, err)
	}
	return unix.Connect(fd, dst)
}
