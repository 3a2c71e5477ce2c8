package rabbitmq

import "sync"

var (
	declaredMu    sync.Mutex
	declaredNames = map[string]bool{} // name -> is an exchange
)

func init() {
	declared = func(exchange bool, name string) {
		declaredMu.Lock()
		declaredNames[name] = exchange
		declaredMu.Unlock()
	}
}

// Declared returns the exchanges and queues that the tests declared
// through the adapter.
func Declared() (exchanges, queues []string) {
	declaredMu.Lock()
	defer declaredMu.Unlock()
	for n, ex := range declaredNames {
		if ex {
			exchanges = append(exchanges, n)
		} else {
			queues = append(queues, n)
		}
	}
	return exchanges, queues
}

// SetHoldHook makes f be called with a partition queue's name when a
// subscription starts stepping back from it; nil removes it.
func SetHoldHook(f func(queue string)) {
	if f == nil {
		holdHook.Store(nil)
		return
	}
	holdHook.Store(&f)
}
