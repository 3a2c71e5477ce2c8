package sqs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/polybus/polybus/message"
)

// EntryError is the failure of one entry of a batch call that SQS
// answered with HTTP 200 (SendMessageBatch, DeleteMessageBatch,
// ChangeMessageVisibilityBatch): SQS's code and message for it, and
// whether SQS blames the sender.
type EntryError struct {
	// Queue is the URL of the queue.
	Queue string
	// Code and Message are SQS's, such as "InternalError".
	Code, Message string
	// SenderFault is SQS's verdict: true when retrying the same entry
	// cannot succeed.
	SenderFault bool
}

func (e *EntryError) Error() string {
	who := "server"
	if e.SenderFault {
		who = "sender"
	}
	return fmt.Sprintf("%s: %s (%s fault) on %s", e.Code, e.Message, who, queueNameOf(e.Queue))
}

// code classifies an entry's failure.
func (e *EntryError) code() message.Code {
	if c := apiCode(e.Code, e.Message); c != message.Unknown {
		return c
	}
	if e.SenderFault {
		return message.InvalidArgument
	}
	return message.Unavailable
}

// ErrorCode maps an error of the AWS SDK (or of a batch entry) onto a
// polybus code; the package documentation lists the mapping.
func ErrorCode(err error) message.Code {
	if err == nil {
		return message.OK
	}
	var pe *message.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	var ee *EntryError
	if errors.As(err, &ee) {
		return ee.code()
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		if c := apiCode(api.ErrorCode(), api.ErrorMessage()); c != message.Unknown {
			return c
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch s := re.HTTPStatusCode(); {
		case s == 401 || s == 403:
			return message.PermissionDenied
		case s == 404:
			return message.NotFound
		case s == 413:
			return message.TooLarge
		case s == 429 || s >= 500:
			return message.Unavailable
		case s >= 400:
			return message.InvalidArgument
		}
	}
	var ne net.Error
	var oe *net.OpError
	var ce *smithy.CanceledError
	switch {
	case errors.As(err, &oe), errors.As(err, &ne),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return message.Unavailable
	case errors.As(err, &ce), errors.Is(err, context.DeadlineExceeded):
		return message.Unavailable
	}
	return message.Unknown
}

// apiCode maps SQS's error codes (JSON protocol, as AWS and ElasticMQ send
// them: "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue",
// "com.amazonaws.sqs#InvalidAttributeValue") onto polybus codes.
func apiCode(code, msg string) message.Code {
	if i := strings.LastIndexByte(code, '#'); i >= 0 {
		code = code[i+1:]
	}
	code = strings.TrimPrefix(code, "AWS.SimpleQueueService.")
	switch code {
	case "QueueDoesNotExist", "NonExistentQueue", "ResourceNotFoundException":
		return message.NotFound
	case "MessageTooLong", "BatchRequestTooLong":
		return message.TooLarge
	case "AccessDenied", "AccessDeniedException", "InvalidClientTokenId", "SignatureDoesNotMatch",
		"UnrecognizedClientException", "MissingAuthenticationToken", "InvalidSecurity",
		"ExpiredToken", "KmsAccessDenied", "KmsDisabled", "KmsNotFound", "KmsInvalidState",
		"KmsInvalidKeyUsage", "KmsOptInRequired", "RequestExpired":
		return message.PermissionDenied
	case "ThrottlingException", "RequestThrottled", "Throttling", "ServiceUnavailable",
		"InternalError", "InternalFailure", "KmsThrottled", "QueueDeletedRecently":
		return message.Unavailable
	case "OverLimit", "LimitExceededException":
		return message.ResourceExhausted
	case "UnsupportedOperation", "InvalidAction", "UnknownOperationException":
		return message.Unimplemented
	case "InvalidAttributeValue", "InvalidParameterValue", "InvalidParameterValueException", "InvalidMessageContents":
		if strings.Contains(msg, "MessageTooLong") || strings.Contains(strings.ToLower(msg), "too long") {
			return message.TooLarge
		}
		return message.InvalidArgument
	case "InvalidAttributeName", "InvalidBatchEntryId", "InvalidIdFormat", "BatchEntryIdsNotDistinct",
		"TooManyEntriesInBatchRequest", "EmptyBatchRequest", "MissingParameter", "ValidationError",
		"MalformedQueryString", "InvalidQueryParameter", "ReceiptHandleIsInvalid", "MessageNotInflight",
		"QueueNameExists", "QueueAlreadyExists", "InvalidAddress":
		return message.InvalidArgument
	case "PurgeQueueInProgress":
		return message.Unavailable
	}
	return message.Unknown
}

// coded wraps err with its code, leaving context errors and errors that
// already carry a code as they are.
func coded(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The SDK wraps a context's end; polybus returns it bare.
		if errors.Is(err, context.Canceled) {
			return context.Canceled
		}
		return context.DeadlineExceeded
	}
	var pe *message.Error
	if errors.As(err, &pe) && pe.Code != message.Unknown {
		return err
	}
	return message.Wrap(ErrorCode(err), op, err)
}

// isRefused reports whether err is a refused connection: nobody listens,
// and asking again at once will not change that.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// isNotFound reports whether err says that a queue does not exist.
func isNotFound(err error) bool {
	return ErrorCode(err) == message.NotFound
}
