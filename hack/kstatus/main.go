// kstatus prints what sigs.k8s.io/cli-utils/pkg/kstatus (the library Flux, kpt and
// `kubectl apply --prune`'s status readers use) computes for Kubernetes objects.
//
// It reads a stream of JSON objects on standard input (e.g. `kubectl get -o json` of single
// objects, or the items of a list, one after the other) and writes, for each, one line of
// JSON: {"status": "Current|InProgress|Failed|Terminating", "message": ..., "conditions": ...}.
// A "List" is expanded into its items.  The tests compare our objects, live and as fixtures,
// with this verdict; hack/build-binaries.sh builds it against a pinned cli-utils.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	decoder := json.NewDecoder(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			fail("reading JSON: %v", err)
		}
		var obj unstructured.Unstructured
		if err := obj.UnmarshalJSON(raw); err != nil {
			fail("not a Kubernetes object: %v", err)
		}
		objects := []unstructured.Unstructured{obj}
		if obj.IsList() {
			list, err := obj.ToList()
			if err != nil {
				fail("reading list: %v", err)
			}
			objects = list.Items
		}
		for i := range objects {
			result, err := status.Compute(&objects[i])
			if err != nil {
				fail("kstatus: %v", err)
			}
			if err := out.Encode(verdict{result.Status, result.Message, result.Conditions}); err != nil {
				fail("writing: %v", err)
			}
		}
	}
}

// verdict is status.Result with the JSON names the rest of the tool's output uses.
type verdict struct {
	Status     status.Status      `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}
