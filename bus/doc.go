// Package bus carries typed events, commands and queries over any polybus
// broker, on the portable publisher and subscriber only (it imports no
// adapter).
//
//	b, _ := bus.New(client, bus.Options{Service: "shipping"})
//	_ = bus.Subscribe(b, "billing", func(ctx context.Context, e OrderPlaced) error { ... })
//	_ = bus.HandleCommand(b, func(ctx context.Context, c ShipOrder) error { ... })
//	_ = bus.HandleQuery(b, func(ctx context.Context, q GetOrder) (Order, error) { ... })
//	_ = b.Start(ctx)
//	defer b.Close(ctx)
//	_ = bus.Publish(ctx, b, OrderPlaced{OrderID: "ord-1"})
//	_ = bus.Send(ctx, b, ShipOrder{OrderID: "ord-1"})
//	order, err := bus.Ask[GetOrder, Order](ctx, b, GetOrder{ID: "ord-1"})
//
// # Semantics
//
// A type's name (TypeName: its Go name, or its Typer method) is in every
// message's metadata (KeyType) and names its topic, Options.Prefix +
// "event."|"command."|"query." + name. Payloads go through a Codec, JSON
// by default.
//
// Events have zero or many handlers: each Subscribe group gets every
// event once (a consumer group of its own), and a publish that no group
// receives is not an error. Commands have exactly one handler service:
// every HandleCommand of a type, in any process, joins one consumer
// group named after the type, so one of them handles each command; a
// second handler for a type in one Bus is refused at registration. Queries
// are request/reply: Ask publishes the query with KeyReplyTo (this Bus's
// reply topic, Prefix+"reply."+InstanceID) and waits for the reply whose
// KeyReplyFor is the query's ID. A Bus has one reply subscription,
// started by its first Ask; before it publishes the first query it pings
// its own reply topic until the subscription receives, so no reply is
// published before anyone listens.
//
// "No handler" for a command: with a Registry (MemoryRegistry,
// SQLRegistry shared by the services), Start records each command type
// with Options.Service (another service already holding the type is
// Conflict), and Send fails with NotFound for a type no service ever
// registered. Without a Registry only the broker can tell: RabbitMQ
// refuses a message that no group receives (Send returns NotFound);
// Kafka, NATS, SQS and memory keep the command until a handler's group
// reads it (SQS only in its holding queue, see its adapter).
//
// Handlers run under middleware.Correlation, so their ctx carries the
// flow's correlation ID (CorrelationID) and the consumed message
// (MessageFrom); everything a handler publishes on the bus gets
// message.KeyCorrelationID, message.KeyCausationID and KeyCausationChain
// (Stamp), which is what choreographies need to follow one flow across
// services. A message of another type, or one that does not decode, is a
// permanent error (dead-lettered by middleware.DLQ where installed).
//
// Brokers on which a new group does not read older messages (RabbitMQ,
// SQS) drop events and commands published before a handler's group
// exists: start handler services first. Start returns once the
// subscriptions are launched, not once each has joined its group.
//
// # Errors
//
// InvalidArgument for bad options, types without a usable name, values
// that do not encode and registrations after Start; NotFound for a
// command no service handles (see above); Conflict for a second service
// of a command type; Unavailable for a query that got no reply within
// Options.QueryTimeout (ctx's own error when ctx ended first: context
// errors are never wrapped); a query handler's error comes back with its
// code (ReplyError); Closed after Close.
package bus
