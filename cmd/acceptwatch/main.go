// Command acceptwatch traces accepted TCP connections: who connects to this
// machine's ports, how often, and a per-address summary that is exact even
// when live lines are dropped.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	// SIGPIPE is caught so that a closed stdout (| head) comes back as EPIPE
	// and acceptwatch detaches cleanly instead of dying mid-write.
	signal.Ignore(syscall.SIGPIPE)
	// A hangup (the terminal closed, or a supervisor's stop) ends the run
	// like Ctrl-C: with the summary.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "acceptwatch: %s\n", strings.Join(strings.Fields(err.Error()), " "))
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
