package kafka

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/polybus/polybus/message"
)

// ErrorCode classifies an error of kafka-go, of the broker (a kafka-go
// Error code) or of the network into a polybus code. It is the drivers'
// ErrorCode, exported for code that talks to Kafka directly beside polybus.
func ErrorCode(err error) message.Code {
	var pe *message.Error
	var ke kafkago.Error
	switch {
	case err == nil:
		return message.OK
	case errors.As(err, &pe):
		return pe.Code
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// Not re-wrapped by the portable layer; a deadline is a timeout.
		return message.Unavailable
	case errors.Is(err, kafkago.ErrGroupClosed):
		return message.Closed
	case errors.Is(err, kafkago.ErrGenerationEnded):
		return message.Unavailable
	case errors.As(err, &ke):
		return kafkaCode(ke)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return message.Unavailable
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &ne) || errors.As(err, &oe) {
		return message.Unavailable
	}
	return message.Unknown
}

func kafkaCode(e kafkago.Error) message.Code {
	switch e {
	case kafkago.MessageSizeTooLarge, kafkago.RecordListTooLarge, kafkago.InvalidMessageSize:
		return message.TooLarge
	case kafkago.TopicAuthorizationFailed, kafkago.GroupAuthorizationFailed, kafkago.ClusterAuthorizationFailed,
		kafkago.SASLAuthenticationFailed, kafkago.UnsupportedSASLMechanism, kafkago.IllegalSASLState,
		kafkago.TransactionalIDAuthorizationFailed, kafkago.BrokerAuthorizationFailed,
		kafkago.DelegationTokenAuthorizationFailed:
		return message.PermissionDenied
	case kafkago.InvalidTopic, kafkago.InvalidPartitionNumber, kafkago.InvalidReplicationFactor,
		kafkago.InvalidReplicaAssignment, kafkago.InvalidConfiguration, kafkago.InvalidGroupId,
		kafkago.InvalidSessionTimeout, kafkago.InvalidRequiredAcks, kafkago.InvalidTimestamp,
		kafkago.PolicyViolation, kafkago.InvalidRecord, kafkago.InvalidRequest:
		return message.InvalidArgument
	case kafkago.UnknownTopicOrPartition:
		// Right after creation a topic can be briefly unknown to a broker;
		// polybus creates topics before using them, so this is transient.
		return message.Unavailable
	case kafkago.GroupIdNotFound, kafkago.ResourceNotFound, kafkago.UnknownTopicID:
		return message.NotFound
	case kafkago.ThrottlingQuotaExceeded, kafkago.GroupMaxSizeReached, kafkago.KafkaStorageError:
		return message.ResourceExhausted
	case kafkago.UnsupportedVersion, kafkago.UnsupportedForMessageFormat, kafkago.UnsupportedCompressionType,
		kafkago.SecurityDisabled, kafkago.TopicDeletionDisabled:
		return message.Unimplemented
	case kafkago.NotEnoughReplicas, kafkago.NotEnoughReplicasAfterAppend, kafkago.LeaderNotAvailable,
		kafkago.NotLeaderForPartition, kafkago.RequestTimedOut, kafkago.BrokerNotAvailable,
		kafkago.ReplicaNotAvailable, kafkago.NetworkException, kafkago.GroupLoadInProgress,
		kafkago.GroupCoordinatorNotAvailable, kafkago.NotCoordinatorForGroup, kafkago.RebalanceInProgress,
		kafkago.IllegalGeneration, kafkago.UnknownMemberId, kafkago.NotController,
		kafkago.FencedLeaderEpoch, kafkago.UnknownLeaderEpoch, kafkago.OffsetNotAvailable,
		kafkago.PreferredLeaderNotAvailable, kafkago.EligibleLeadersNotAvailable, kafkago.StaleBrokerEpoch:
		return message.Unavailable
	}
	if e.Temporary() || e.Timeout() {
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
