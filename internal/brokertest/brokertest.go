// Package brokertest tells tests where the real brokers are.
//
// URL(t, name) returns a broker's URL from the environment (POLYBUS_<NAME>_URL,
// written by `scripts/brokers env` / the cache's brokers.env). When the
// variable is unset and a Docker daemon answers, it starts the broker in a
// container for the test (see docker.go). Otherwise the test is skipped, or,
// under CI=true, failed: CI must never pass by skipping a broker.
package brokertest

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
)

// Broker names accepted by URL, with the environment variable each reads.
var envVars = map[string]string{
	"kafka":    "POLYBUS_KAFKA_URL",
	"rabbitmq": "POLYBUS_AMQP_URL",
	"amqp":     "POLYBUS_AMQP_URL",
	"sqs":      "POLYBUS_SQS_URL",
	"nats":     "POLYBUS_NATS_URL",
	"postgres": "POLYBUS_POSTGRES_URL",
}

// Names lists the broker names URL accepts.
func Names() []string {
	names := make([]string, 0, len(envVars))
	for n := range envVars {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// EnvVar returns the environment variable that holds the URL of the named
// broker ("kafka", "rabbitmq" or "amqp", "sqs", "nats", "postgres").
func EnvVar(name string) (string, bool) {
	v, ok := envVars[strings.ToLower(name)]
	return v, ok
}

// scriptName maps a broker name to its name in scripts/brokers.
func scriptName(name string) string {
	if name == "amqp" {
		return "rabbitmq"
	}
	return name
}

// CI reports whether the tests run under CI (CI=true), where a missing broker
// is a failure and never a skip.
func CI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// URL returns the URL of the named broker for t. See the package comment for
// where it comes from. Shapes:
//
//	kafka://127.0.0.1:9092
//	amqp://guest:guest@127.0.0.1:5672/
//	sqs://127.0.0.1:9324?region=us-east-1    (plain-HTTP endpoint host:port)
//	nats://127.0.0.1:4222
//	postgres://postgres@127.0.0.1:5432/polybus?sslmode=disable
func URL(t testing.TB, name string) string {
	t.Helper()
	name = strings.ToLower(name)
	env, ok := envVars[name]
	if !ok {
		t.Fatalf("brokertest: unknown broker %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	if u := os.Getenv(env); u != "" {
		return u
	}
	u, err := startWithDocker(t, scriptName(name))
	if err == nil {
		return u
	}
	msg := fmt.Sprintf("brokertest: %s is not set and no broker could be started (%v); run `scripts/brokers up %s` (or `make brokers`) and source its env file: . ${POLYBUS_CACHE:-$HOME/.cache/polybus}/brokers.env",
		env, err, scriptName(name))
	if CI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
