package middleware_test

import (
	"testing"

	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/middleware/storetest"
)

// The memory stores pass the suite that the SQL stores pass too.

func TestMemoryDedupeStoreSuite(t *testing.T) {
	storetest.Dedupe(t, storetest.DedupeStores{Fresh: func(t *testing.T) middleware.DedupeStore {
		s, err := middleware.NewMemoryDedupeStore(0)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}})
}

func TestMemoryOrderingStoreSuite(t *testing.T) {
	storetest.Ordering(t, storetest.OrderingStores{Fresh: func(*testing.T) middleware.OrderingStore {
		return middleware.NewMemoryOrderingStore()
	}})
}

func TestMemorySequenceCounterSuite(t *testing.T) {
	storetest.Counter(t, storetest.CounterStores{Fresh: func(*testing.T) middleware.SequenceCounter {
		return middleware.NewMemorySequenceCounter()
	}})
}
