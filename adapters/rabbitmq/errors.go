package rabbitmq

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
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
	if tlsRefused(err) {
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

// tlsRefused reports whether err is a TLS handshake that failed on a
// certificate: the server's (unknown authority, wrong name, invalid) or
// the client's (see certificateRefused).
func tlsRefused(err error) bool {
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	var ce x509.CertificateInvalidError
	return errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &ce) || certificateRefused(err)
}

// certificateRefused reports whether err is a TLS alert from the server
// about the client's certificate (missing, unknown, bad, expired) or
// access: the server will refuse the next try just the same.
func certificateRefused(err error) bool {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "remote error" || oe.Err == nil {
		return false
	}
	msg := oe.Err.Error()
	return strings.HasPrefix(msg, "tls: ") && (strings.Contains(msg, "certificate") || strings.Contains(msg, "access denied"))
}
