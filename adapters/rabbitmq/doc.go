// Package rabbitmq is polybus's RabbitMQ adapter, on amqp091-go.
//
//	import _ "github.com/polybus/polybus/adapters/rabbitmq"
//
//	c, err := polybus.Open(ctx, "amqp://guest:guest@localhost:5672/")
//
// or, from Go, [Open] with a [Config].
package rabbitmq
