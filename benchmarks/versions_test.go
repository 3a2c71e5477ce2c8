package benchmarks

import (
	"os"
	"runtime/debug"
	"strings"
)

// versions lists the client and peer modules this test is built with:
// from the build information, or, when the test binary has none (go test
// leaves its dependencies out), from go.mod, whose requirements list
// every module the build uses.
func versions() map[string]string {
	want := map[string]bool{
		"github.com/segmentio/kafka-go": true, "github.com/nats-io/nats.go": true,
		"github.com/nats-io/nats-server/v2": true, "github.com/rabbitmq/amqp091-go": true,
		"github.com/aws/aws-sdk-go-v2/service/sqs": true, "github.com/ThreeDotsLabs/watermill": true,
		"github.com/ThreeDotsLabs/watermill-kafka/v3": true, "github.com/ThreeDotsLabs/watermill-amqp/v3": true,
		"github.com/ThreeDotsLabs/watermill-nats/v2": true, "github.com/IBM/sarama": true, "gocloud.dev": true,
		"gocloud.dev/pubsub/rabbitpubsub": true,
	}
	v := map[string]string{}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if want[d.Path] {
				v[d.Path] = d.Version
			}
		}
	}
	if len(v) > 0 {
		return v
	}
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		return v
	}
	for _, line := range strings.Split(string(mod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && want[f[0]] {
			v[f[0]] = f[1]
		}
	}
	return v
}
