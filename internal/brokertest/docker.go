package brokertest

// The Docker path: used only when a broker's POLYBUS_*_URL is unset and a
// Docker daemon answers. Each call starts one container for the calling test
// and registers its removal with t.Cleanup, so call URL once per top-level
// test and hand the URL to subtests. Without Docker (the usual case here)
// scripts/brokers provides the brokers instead.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"
)

// container describes how to run one broker in Docker.
type container struct {
	repo, tag string
	port      string // container port, e.g. "5672/tcp"
	env       []string
	cmd       []string
	// fixedPort publishes the container port on the same free host port:
	// Kafka advertises its listener address, so both sides must agree.
	fixedPort bool
	url       func(hostPort string) string
}

var containers = map[string]container{
	"kafka": {
		repo: "apache/kafka", tag: "4.0.0", port: "9092/tcp", fixedPort: true,
		url: func(hp string) string { return "kafka://" + hp },
	},
	"rabbitmq": {
		repo: "rabbitmq", tag: "3.13", port: "5672/tcp",
		url: func(hp string) string { return "amqp://guest:guest@" + hp + "/" },
	},
	"sqs": {
		repo: "softwaremill/elasticmq-native", tag: "1.6.14", port: "9324/tcp",
		url: func(hp string) string { return "sqs://" + hp + "?region=us-east-1" },
	},
	"nats": {
		repo: "nats", tag: "2.11", port: "4222/tcp", cmd: []string{"-js"},
		url: func(hp string) string { return "nats://" + hp },
	},
	"postgres": {
		repo: "postgres", tag: "15", port: "5432/tcp",
		env: []string{"POSTGRES_HOST_AUTH_METHOD=trust", "POSTGRES_DB=polybus"},
		url: func(hp string) string { return "postgres://postgres@" + hp + "/polybus?sslmode=disable" },
	},
}

// kafkaEnv configures the apache/kafka image as one KRaft node whose client
// listener is advertised on the host port.
func kafkaEnv(hostPort int) []string {
	return []string{
		"KAFKA_NODE_ID=1",
		"KAFKA_PROCESS_ROLES=broker,controller",
		"KAFKA_LISTENERS=PLAINTEXT://:9092,CONTROLLER://:9093",
		"KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://127.0.0.1:" + strconv.Itoa(hostPort),
		"KAFKA_CONTROLLER_LISTENER_NAMES=CONTROLLER",
		"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"KAFKA_CONTROLLER_QUORUM_VOTERS=1@localhost:9093",
		"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1",
		"KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS=1",
		"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR=1",
		"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=1",
		"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR=1",
		"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR=1",
		"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS=0",
	}
}

var errNoDocker = errors.New("no Docker daemon answers")

// startWithDocker starts the named broker in a container when a Docker
// daemon answers, and returns its URL.
func startWithDocker(t testing.TB, name string) (string, error) {
	t.Helper()
	spec, ok := containers[name]
	if !ok {
		return "", fmt.Errorf("no container recipe for %s", name)
	}
	pool, err := dockertest.NewPool("")
	if err != nil {
		return "", errNoDocker
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	err = pool.Client.PingWithContext(ctx)
	cancel()
	if err != nil {
		return "", errNoDocker
	}
	pool.MaxWait = 2 * time.Minute

	opts := &dockertest.RunOptions{Repository: spec.repo, Tag: spec.tag, Env: spec.env, Cmd: spec.cmd}
	if spec.fixedPort {
		hp, err := freePort()
		if err != nil {
			return "", err
		}
		opts.PortBindings = map[dc.Port][]dc.PortBinding{
			dc.Port(spec.port): {{HostIP: "127.0.0.1", HostPort: strconv.Itoa(hp)}},
		}
		opts.ExposedPorts = []string{spec.port}
		if name == "kafka" {
			opts.Env = kafkaEnv(hp)
		}
	}
	res, err := pool.RunWithOptions(opts, func(hc *dc.HostConfig) {
		hc.AutoRemove = true
		hc.RestartPolicy = dc.RestartPolicy{Name: "no"}
	})
	if err != nil {
		return "", fmt.Errorf("docker run %s:%s: %w", spec.repo, spec.tag, err)
	}
	t.Cleanup(func() {
		if err := pool.Purge(res); err != nil {
			t.Logf("brokertest: removing %s container: %v", name, err)
		}
	})
	_ = res.Expire(30 * 60) // a crashed test run must not leave it forever

	hostPort := res.GetHostPort(spec.port)
	if hostPort == "" {
		return "", fmt.Errorf("docker: %s publishes no %s", name, spec.port)
	}
	if err := pool.Retry(func() error {
		c, err := net.DialTimeout("tcp", hostPort, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		return "", fmt.Errorf("docker: %s did not accept connections on %s: %w", name, hostPort, err)
	}
	t.Logf("brokertest: started %s in Docker (%s:%s) at %s", name, spec.repo, spec.tag, hostPort)
	return spec.url(hostPort), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
