package main

// The adapters the command can open. Each registers its URL schemes when
// imported.
import (
	_ "github.com/polybus/polybus/adapters/kafka"
	_ "github.com/polybus/polybus/adapters/memory"
	_ "github.com/polybus/polybus/adapters/nats"
	_ "github.com/polybus/polybus/adapters/rabbitmq"
	_ "github.com/polybus/polybus/adapters/sqs"
)
