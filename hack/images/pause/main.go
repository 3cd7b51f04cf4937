// pause: the process that holds a pod sandbox's namespaces (containerd's sandbox image).
//
// Kubernetes' own pause is C and lives in its build tree; this is the same contract in Go:
// sleep until SIGINT or SIGTERM, and reap zombies, since it is PID 1 of the pod.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
