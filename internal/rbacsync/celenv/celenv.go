// Package celenv is the CEL environment of ValidatingAdmissionPolicy expressions as kaccess
// checks and evaluates them offline: Kubernetes' own base environment
// (k8s.io/apiserver/pkg/cel/environment, with its libraries such as quantity() and the string
// extensions) and the variables the API server declares, all untyped (the API server types
// objects by schema only to warn when a policy is created).
package celenv

import (
	"fmt"
	"sync"

	"github.com/google/cel-go/cel"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"
)

var (
	once   sync.Once
	env    *cel.Env
	envErr error
)

// Env returns the shared environment.
func Env() (*cel.Env, error) {
	once.Do(func() {
		ver := environment.DefaultCompatibilityVersion()
		set, err := environment.MustBaseEnvSet(ver).Extend(environment.VersionedOptions{
			IntroducedVersion: ver,
			EnvOptions: []cel.EnvOption{
				cel.Variable("object", cel.DynType),
				cel.Variable("oldObject", cel.DynType),
				cel.Variable("request", cel.DynType),
				cel.Variable("params", cel.DynType),
				cel.Variable("namespaceObject", cel.DynType),
				cel.Variable("variables", cel.MapType(cel.StringType, cel.DynType)),
			},
		})
		if err != nil {
			envErr = err
			return
		}
		env, envErr = set.Env(environment.NewExpressions)
	})
	return env, envErr
}

// Compile parses and checks expr and returns a program bounded by the API server's per-call
// cost limit.
func Compile(expr string) (cel.Program, error) {
	e, err := Env()
	if err != nil {
		return nil, err
	}
	ast, iss := e.Compile(expr)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	return e.Program(ast, cel.CostLimit(celconfig.PerCallLimit))
}

// CheckBool parses and checks expr and reports an error unless it can evaluate to a bool.
func CheckBool(expr string) error {
	e, err := Env()
	if err != nil {
		return err
	}
	ast, iss := e.Compile(expr)
	if iss.Err() != nil {
		return iss.Err()
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) && !t.IsExactType(cel.DynType) {
		return fmt.Errorf("evaluates to %s, want bool", t)
	}
	return nil
}
