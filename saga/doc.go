// Package saga orchestrates distributed transactions: a saga is a list
// of steps, each an action and the compensation that undoes it; the
// actions run in order, and when one fails the compensations of the
// steps before it run in reverse order. It runs on any polybus broker,
// on the portable publisher and subscriber only, with its state in
// SQLite (the default) or PostgreSQL.
//
//	def := saga.Definition[Order]{Name: "OrderSaga", Steps: []saga.Step[Order]{
//		{Name: "reserve",
//			Action: func(ctx context.Context, x *saga.Exec[Order]) error {
//				return bus.Send(ctx, b, ReserveInventory{...}, x.AwaitReply()...)
//			},
//			Compensate: func(ctx context.Context, x *saga.Exec[Order]) error {
//				return bus.Send(ctx, b, ReleaseInventory{...}, x.AwaitReply()...)
//			}},
//		...
//	}}
//	s, _ := saga.New(def, saga.Config{Bus: b, Store: store})
//	go s.Run(ctx)
//	_ = s.Start(ctx, "ord-1", Order{...})
//
// See Example_orderSaga for the seed's OrderSaga with its three services,
// and package bus's Example_choreography for the same kind of flow
// without an orchestrator. `polybus saga ls|show` reads the store.
//
// # Semantics
//
// A saga's messages (its start, the replies to its commands, its
// timeouts) travel on one topic, Prefix+"saga."+Name, keyed by saga ID,
// and are handled by Run under one consumer group, "saga."+Name: one
// handler call at a time per saga (per-key order), and every save of its
// state expects the version it loaded (Store.Save), so two orchestrators
// never both move one saga on.
//
// The state (State: status, current step, data, each step's action and
// compensation as a Phase) is saved after every change: before an action
// or compensation is called (Started, Runs+1), after it returns (Done,
// Failed, TimedOut, or Waiting when it sent a command with
// Exec.AwaitReply), and when its reply or timeout is applied. So after a
// crash the saga goes on from its last recorded step: the unacked
// message is redelivered, and Run, when it starts, publishes a run
// message for every saga that is not final. A phase found Started was
// interrupted and runs again with Exec.Runs > 1: an action is never run
// twice without saying so. Exec.IdempotencyKey (SagaID/Step/action or
// /compensate) is the same on every run and is the ID of the command that
// AwaitReply sends, so the service (or the broker's duplicate window)
// applies it once.
//
// A step's Timeout runs from the phase's first start: it is the
// context's deadline of the call, and for a phase waiting on a reply a
// timer message on Prefix+"saga."+Name+".timers", which the orchestrator
// nacks with a delay until it is due (in steps of at most the broker's
// longest nack delay) and then turns into a timeout on the saga's topic.
// The deadline is also in the state, so a lost timer is made up for by
// the next message of the saga. A phase that fails with a transient
// error is retried in process by middleware.Retry (Config.Retry) with its
// backoff; a permanent error (message.PermanentError, or an "error"
// reply) or the last retry's failure fails it.
//
// When an action fails, the saga compensates: the compensations of the
// steps before it, in reverse order. A failed action is assumed to have
// left nothing to undo (its compensation is Skipped); a timed-out one
// may have taken effect after all, so it is compensated too. A step
// without a compensation is skipped. When every compensation succeeded
// the saga is Compensated; when one fails or times out the saga is
// Stuck, with both errors in State.Error, and stays so: it is listed by
// `polybus saga ls --status stuck` for a person to resolve.
//
// Brokers on which a new group does not read older messages (RabbitMQ,
// SQS) drop a start published before Run's subscriptions exist: Run
// before Start there. A timer on a broker without native nack delays is
// held by the subscriber until due, taking one of its Prefetch slots.
//
// # Errors
//
// InvalidArgument for a bad Definition, Config, saga ID or data;
// Conflict for a saga ID of another Definition and for a save that lost
// a race (handled inside Run by redelivery); NotFound for a saga that
// the store does not have; Unavailable for database failures; the
// publisher's errors. A failed action or compensation is not an error of
// any call: it is the saga's state.
package saga
