// Baseline: a Go net/http server on fd 3 that calls http.Server.Shutdown on
// SIGTERM, as the net/http documentation suggests, and sends READY=1.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		log.Fatalf("fd 3 is not a listening socket: %v", err)
	}
	worker := os.Getenv("OVERSEER_WORKER")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "worker=%s pid=%d\n", worker, os.Getpid())
	})}
	go func() { _ = srv.Serve(ln) }()
	if conn, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET")); err == nil {
		_, _ = conn.Write([]byte("READY=1"))
		conn.Close()
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	<-stop
	_ = srv.Shutdown(context.Background())
}
