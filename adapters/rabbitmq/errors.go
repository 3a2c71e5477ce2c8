package rabbitmq

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/polybus/polybus/message"
)

// ErrorCode classifies an error of amqp091-go, the broker or the network
// into a polybus code. It is the drivers' ErrorCode, exported for code that
// talks to RabbitMQ directly beside polybus.
func ErrorCode(err error) message.Code {
	var pe *message.Error
	var ae *amqp.Error
	switch {
	case err == nil:
		return message.OK
	case errors.As(err, &pe):
		return pe.Code
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return message.Unavailable
	case errors.Is(err, amqp.ErrClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return message.Unavailable
	case errors.Is(err, amqp.ErrSASL), errors.Is(err, amqp.ErrCredentials), errors.Is(err, amqp.ErrVhost),
		errors.Is(err, os.ErrPermission):
		return message.PermissionDenied
	case errors.As(err, &ae):
		return replyCode(ae.Code)
	}
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	var ce x509.CertificateInvalidError
	if errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &ce) {
		return message.PermissionDenied
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &ne) || errors.As(err, &oe) {
		return message.Unavailable
	}
	if errors.Is(err, os.ErrNotExist) {
		return message.InvalidArgument
	}
	return message.Unknown
}

// replyCode maps an AMQP reply code onto a polybus code.
func replyCode(code int) message.Code {
	switch code {
	case amqp.ContentTooLarge, amqp.FrameError:
		return message.TooLarge
	case amqp.NoRoute, amqp.NotFound:
		return message.NotFound
	case amqp.AccessRefused, amqp.NotAllowed:
		return message.PermissionDenied
	case amqp.PreconditionFailed, amqp.SyntaxError, amqp.CommandInvalid, amqp.InvalidPath:
		return message.InvalidArgument
	case amqp.ResourceLocked, amqp.ResourceError:
		return message.ResourceExhausted
	case amqp.ConnectionForced, amqp.ChannelError, amqp.UnexpectedFrame, amqp.InternalError, amqp.NoConsumers:
		return message.Unavailable
	case amqp.NotImplemented:
		return message.Unimplemented
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
