package bus

import (
	"reflect"
	"regexp"

	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/message"
)

// Codec turns typed values into payloads and back: the event store's
// codec interface, so one codec serves both. It must be safe for
// concurrent use. A codec with a ContentType() string method names its
// encoding in KeyContentType.
type Codec = eventstore.Codec

// JSON is the default Codec: encoding/json (eventstore.JSON).
var JSON Codec = eventstore.JSON

// contentType returns c's content type: its ContentType method's, else
// "application/json" for JSON, else "".
func contentType(c Codec) string {
	if ct, ok := c.(interface{ ContentType() string }); ok {
		return ct.ContentType()
	}
	if c == JSON {
		return "application/json"
	}
	return ""
}

// Typer is implemented by a message type that names itself. Without it,
// a type's name is its Go name (reflect.Type.Name), such as "OrderPlaced".
type Typer interface {
	// MessageType returns the type's name. It must not depend on the
	// value: it is called on the zero value.
	MessageType() string
}

// typeRE is what a type name may contain: it is part of topic and group
// names, which every adapter accepts in this alphabet.
var typeRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$`)

// TypeName returns the name that the buses give T: in metadata
// (KeyType), in topic names and in command and query groups. It is T's
// MessageType when T implements Typer, else T's Go name. Errors:
// InvalidArgument for an unnamed type (a pointer, slice or map), a name
// longer than 100 bytes or one outside letters, digits, '_', '-' and
// inner dots (a generic type's name has brackets: implement Typer).
func TypeName[T any]() (string, error) {
	var zero T
	name := ""
	if t, ok := any(zero).(Typer); ok {
		name = t.MessageType()
	} else if t, ok := any(&zero).(Typer); ok {
		name = t.MessageType()
	} else {
		name = reflect.TypeFor[T]().Name()
	}
	if name == "" {
		return "", message.Errorf(message.InvalidArgument, "bus: type name", "%s has no name: use a named type or implement bus.Typer", reflect.TypeFor[T]())
	}
	if len(name) > 100 || !typeRE.MatchString(name) {
		return "", message.Errorf(message.InvalidArgument, "bus: type name", "type name %q: want at most 100 letters, digits, '_', '-' and inner dots (implement bus.Typer)", name)
	}
	return name, nil
}
