package subscriber

import "sync"

// slots counts a run's room for messages: one slot per message received
// and not yet settled, Config.Prefetch in all. It replaces a channel of
// tokens, which cost one channel operation per slot each time the receive
// loop took all free room and gave back what Receive did not fill.
type slots struct {
	mu   sync.Mutex
	free int
	// room holds a token when slots may have been freed since the receive
	// loop last looked; put never blocks on it.
	room chan struct{}
}

func newSlots(n int) *slots { return &slots{free: n, room: make(chan struct{}, 1)} }

// takeAll waits until at least one slot is free, or stop is closed
// (false), and takes every free slot.
func (s *slots) takeAll(stop <-chan struct{}) (int, bool) {
	for {
		s.mu.Lock()
		n := s.free
		s.free = 0
		s.mu.Unlock()
		if n > 0 {
			return n, true
		}
		select {
		case <-s.room:
		case <-stop:
			return 0, false
		}
	}
}

// put frees n slots.
func (s *slots) put(n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	s.free += n
	s.mu.Unlock()
	select {
	case s.room <- struct{}{}:
	default:
	}
}
