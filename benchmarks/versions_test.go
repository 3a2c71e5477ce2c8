package benchmarks

import "runtime/debug"

// versions lists the client and peer modules this test binary was built
// with.
func versions() map[string]string {
	want := map[string]bool{
		"github.com/segmentio/kafka-go": true, "github.com/nats-io/nats.go": true,
		"github.com/nats-io/nats-server/v2": true, "github.com/rabbitmq/amqp091-go": true,
		"github.com/aws/aws-sdk-go-v2/service/sqs": true, "github.com/ThreeDotsLabs/watermill": true,
		"github.com/ThreeDotsLabs/watermill-kafka/v3": true, "github.com/ThreeDotsLabs/watermill-amqp/v3": true,
		"github.com/ThreeDotsLabs/watermill-nats/v2": true, "github.com/IBM/sarama": true, "gocloud.dev": true,
	}
	v := map[string]string{}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if want[d.Path] {
				v[d.Path] = d.Version
			}
		}
	}
	return v
}
