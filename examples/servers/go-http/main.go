// A Go net/http server under overseer: ./run HOST:PORT builds and runs it.
//
// It takes its listening socket from socket activation (fd 3, LISTEN_FDS,
// LISTEN_PID), sends READY=1 on NOTIFY_SOCKET once it serves, and drains on
// SIGTERM. http.Server.Shutdown alone (and SetKeepAlivesEnabled(false))
// closes idle keep-alive connections at once, while their clients may be
// sending the next request on them; so on SIGTERM this server first stops
// accepting and answers each connection's next request with
// `Connection: close`, gives idle connections a grace period, and only then
// calls Shutdown, which waits for requests in progress.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// How long a keep-alive connection may stay idle once draining.
const grace = 2 * time.Second

func main() {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") == "" {
		log.Fatal("no socket passed (LISTEN_FDS/LISTEN_PID): run me under overseer run")
	}
	file := os.NewFile(3, "listener")
	ln, err := net.FileListener(file)
	if err != nil {
		log.Fatalf("fd 3 is not a listening socket: %v", err)
	}
	file.Close()

	var draining atomic.Bool
	worker := os.Getenv("OVERSEER_WORKER")
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			// net/http closes the connection after this response.
			w.Header().Set("Connection", "close")
		}
		fmt.Fprintf(w, "worker=%s pid=%d\n", worker, os.Getpid())
	})
	srv := &http.Server{Handler: handler}
	go func() {
		// Returns when the listener is closed; open connections go on.
		_ = srv.Serve(ln)
	}()
	notify("READY=1")

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	<-stop
	draining.Store(true)
	ln.Close()
	time.Sleep(grace)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Printf("shutdown: %v", err)
	}
}

// notify sends an sd_notify message to NOTIFY_SOCKET, if there is one.
func notify(message string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		log.Printf("notify: %v", err)
		return
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(message)); err != nil {
		log.Printf("notify: %v", err)
	}
}
