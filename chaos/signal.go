package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// signalContext ends at SIGINT or SIGTERM, so that the suite removes its
// namespaces and mounts.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
