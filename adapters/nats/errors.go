package nats

import (
	"context"
	"errors"
	"net"
	"os"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus/message"
)

// JetStream API error codes that the jetstream package has no sentinel for.
const (
	jsErrAccountResources      = 10002 // JSAccountResourcesExceededErr
	jsErrInsufficientResources = 10023 // JSInsufficientResourcesErr
	jsErrMaxStreams            = 10027 // JSMaximumStreamsLimitErr
	jsErrSubjectOverlap        = 10065 // JSStreamSubjectOverlapErr
)

// ErrorCode classifies an error of nats.go, the jetstream package or the
// network into a polybus code. It is the drivers' ErrorCode, exported for
// code that talks to NATS directly beside polybus.
func ErrorCode(err error) message.Code {
	var pe *message.Error
	switch {
	case err == nil:
		return message.OK
	case errors.As(err, &pe):
		return pe.Code
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// Not re-wrapped by the portable layer; a deadline is a timeout.
		return message.Unavailable
	case errors.Is(err, natsgo.ErrMaxPayload), errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum),
		errors.Is(err, jetstream.ErrMaxBytesExceeded):
		return message.TooLarge
	case errors.Is(err, natsgo.ErrAuthorization), errors.Is(err, natsgo.ErrAuthExpired),
		errors.Is(err, natsgo.ErrAuthRevoked), errors.Is(err, natsgo.ErrPermissionViolation),
		errors.Is(err, natsgo.ErrAccountAuthExpired), errors.Is(err, natsgo.ErrSecureConnRequired),
		errors.Is(err, os.ErrPermission):
		return message.PermissionDenied
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrConsumerNotFound),
		errors.Is(err, jetstream.ErrConsumerDoesNotExist), errors.Is(err, jetstream.ErrConsumerDeleted),
		errors.Is(err, os.ErrNotExist):
		return message.NotFound
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, natsgo.ErrHeadersNotSupported):
		return message.Unimplemented
	case errors.Is(err, jetstream.ErrTooManyStalledMsgs), errors.Is(err, natsgo.ErrSlowConsumer),
		errors.Is(err, jetstream.ErrMaximumConsumersLimit), errors.Is(err, natsgo.ErrMaxConnectionsExceeded),
		errors.Is(err, natsgo.ErrMaxAccountConnectionsExceeded), errors.Is(err, natsgo.ErrMaxSubscriptionsExceeded):
		return message.ResourceExhausted
	case errors.Is(err, natsgo.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, natsgo.ErrTimeout), errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, natsgo.ErrConnectionClosed), errors.Is(err, jetstream.ErrConnectionClosed),
		errors.Is(err, natsgo.ErrConnectionReconnecting), errors.Is(err, natsgo.ErrConnectionDraining),
		errors.Is(err, natsgo.ErrReconnectBufExceeded), errors.Is(err, natsgo.ErrDisconnected),
		errors.Is(err, natsgo.ErrNoServers), errors.Is(err, natsgo.ErrStaleConnection),
		errors.Is(err, natsgo.ErrNoInfoReceived), errors.Is(err, natsgo.ErrInvalidConnection),
		errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, jetstream.ErrServerShutdown),
		errors.Is(err, jetstream.ErrConsumerLeadershipChanged), errors.Is(err, jetstream.ErrJetStreamPublisherClosed):
		return message.Unavailable
	case errors.Is(err, natsgo.ErrBadSubject), errors.Is(err, natsgo.ErrBadHeaderMsg),
		errors.Is(err, jetstream.ErrInvalidOption), errors.Is(err, jetstream.ErrInvalidSubject),
		errors.Is(err, jetstream.ErrInvalidStreamName), errors.Is(err, jetstream.ErrInvalidConsumerName),
		errors.Is(err, natsgo.ErrInvalidArg):
		return message.InvalidArgument
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jsErrAccountResources, jsErrInsufficientResources, jsErrMaxStreams:
			return message.ResourceExhausted
		}
		switch {
		case api.Code == 503 || api.Code == 408 || api.Code == 504:
			return message.Unavailable
		case api.Code == 404:
			return message.NotFound
		case api.Code == 401 || api.Code == 403:
			return message.PermissionDenied
		case api.Code == 400:
			return message.InvalidArgument
		}
		return message.Unknown
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &ne) || errors.As(err, &oe) {
		return message.Unavailable
	}
	return message.Unknown
}

// coded wraps err with op and its code, leaving coded and context errors
// as they are.
func coded(op string, err error) error {
	var pe *message.Error
	if err == nil || errors.As(err, &pe) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return message.Wrap(ErrorCode(err), op, err)
}
