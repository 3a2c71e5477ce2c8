// Command brokerprobe is the health check that scripts/brokers uses where a
// port check is not enough. "brokerprobe kafka HOST:PORT" does a real Kafka
// metadata round trip and exits 0 only when the broker lists itself and a
// controller; it prints what it saw.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/segmentio/kafka-go"
)

func main() {
	if len(os.Args) != 3 || os.Args[1] != "kafka" {
		fmt.Fprintln(os.Stderr, "usage: brokerprobe kafka HOST:PORT")
		os.Exit(2)
	}
	if err := probeKafka(os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "kafka:", err)
		os.Exit(1)
	}
}

func probeKafka(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := (&kafka.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	brokers, err := conn.Brokers()
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	if len(brokers) == 0 {
		return fmt.Errorf("metadata lists no broker")
	}
	ctrl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	fmt.Printf("ok: %d broker(s), controller %d at %s\n", len(brokers), ctrl.ID, net.JoinHostPort(ctrl.Host, fmt.Sprint(ctrl.Port)))
	return nil
}
