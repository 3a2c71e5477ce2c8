package publisher

// Waiting returns how many calls wait, not yet picked into a batch, for
// topic.
func Waiting(p *Publisher, topic string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if q := p.topics[topic]; q != nil {
		return len(q.waiting)
	}
	return 0
}
