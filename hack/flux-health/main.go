// flux-health evaluates Flux healthCheckExprs on objects with Flux's own evaluator
// (github.com/fluxcd/pkg/runtime/cel, the code kustomize-controller runs), so the tests check
// integrations/flux against fixtures and live objects without waiting for a reconciliation.
//
//	flux-health EXPRS.yaml < objects.json
//
// EXPRS.yaml is the list a Kustomization carries in spec.healthCheckExprs.  Objects are a
// stream of JSON objects on standard input; for each, one JSON line:
// {"status": "Current|InProgress|Failed", "error": "..."} (an expression that cannot be
// evaluated is an error, which kustomize-controller treats as "not ready yet").  A kind
// without expressions gets kstatus, as in kustomize-controller (Flux's cli-utils fork).
// hack/build-binaries.sh builds it in the kustomize-controller build module, so the
// evaluator is the one of the pinned controller.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

type verdict struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: flux-health EXPRS.yaml < objects.json")
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	var checks []kustomize.CustomHealthCheck
	if err := yaml.UnmarshalStrict(raw, &checks); err != nil {
		fail("%s: %v", os.Args[1], err)
	}
	evaluators := map[schema.GroupKind]*cel.StatusEvaluator{}
	for i := range checks {
		evaluator, err := cel.NewStatusEvaluator(&checks[i].HealthCheckExpressions)
		if err != nil {
			fail("%s[%d]: %v", os.Args[1], i, err)
		}
		evaluators[schema.FromAPIVersionAndKind(checks[i].APIVersion, checks[i].Kind).GroupKind()] = evaluator
	}

	decoder := json.NewDecoder(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for {
		var doc json.RawMessage
		if err := decoder.Decode(&doc); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			fail("reading JSON: %v", err)
		}
		var obj unstructured.Unstructured
		if err := obj.UnmarshalJSON(doc); err != nil {
			fail("not a Kubernetes object: %v", err)
		}
		compute := status.Compute
		if evaluator, ok := evaluators[obj.GroupVersionKind().GroupKind()]; ok {
			compute = func(u *unstructured.Unstructured) (*status.Result, error) {
				return evaluator.Evaluate(context.Background(), u)
			}
		}
		result := verdict{}
		if computed, err := compute(&obj); err != nil {
			result.Error = err.Error()
		} else {
			result.Status = string(computed.Status)
		}
		if err := out.Encode(result); err != nil {
			fail("writing: %v", err)
		}
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "flux-health: "+format+"\n", args...)
	os.Exit(1)
}
