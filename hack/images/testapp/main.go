// testapp: the HTTP app that dynamic versions run in the real-node end-to-end tests.
//
// Everything is set through the environment, which a DeploymentVersion's runtime carries:
//
//	PORT           port to listen on (default 8080)
//	HEALTH_PATH    health path (default /healthz)
//	HEALTH_STATUS  status the health path answers (default 200): 500 makes a failing app
//	LISTEN         "never": do not listen at all (an app that hangs at start)
//	MESSAGE        what / answers, so tests can tell versions apart
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	if env("LISTEN", "") == "never" {
		<-stop
		return
	}
	status, err := strconv.Atoi(env("HEALTH_STATUS", "200"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "HEALTH_STATUS must be a number:", err)
		os.Exit(2)
	}
	message := env("MESSAGE", "hello from testapp")
	mux := http.NewServeMux()
	mux.HandleFunc(env("HEALTH_PATH", "/healthz"), func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		fmt.Fprintf(w, "health %d\n", status)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, message) })
	server := &http.Server{Addr: ":" + env("PORT", "8080"), Handler: mux}
	go func() {
		<-stop
		server.Close()
	}()
	fmt.Printf("testapp listening on %s (health %s answers %d)\n", server.Addr, env("HEALTH_PATH", "/healthz"), status)
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
