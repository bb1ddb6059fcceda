// Publish one close request to job-closer's close queue, the way the worker expects it.
//
//	go mod init producer && go get github.com/rabbitmq/amqp091-go
//	AMQP_URL=amqp://user:pass@rabbitmq:5672/%2f CLOSE_QUEUE=linkedin.jobs.close \
//	    go run publish_close_request.go JOB-150421
//
// Exits 0 once the broker has confirmed the message, 1 when it did not take it.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// closeRequest is one LinkedIn job element; see schema/close-request.schema.json for every rule.
func closeRequest(externalID string) map[string]any {
	return map[string]any{
		"companyApplyUrl":      "https://jobs.example.com/apply/" + externalID,
		"externalJobPostingId": externalID,
		"description":          "This position has been filled.",
		"title":                "Senior Engineer",
		"listedAt":             int64(1700000000000),
		"location":             "San Francisco, California",
	}
}

func run() error {
	url := getenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
	queue := getenv("CLOSE_QUEUE", "linkedin.jobs.close")
	externalID := "JOB-1"
	if len(os.Args) > 1 {
		externalID = os.Args[1]
	}
	body, err := json.Marshal(closeRequest(externalID))
	if err != nil {
		return err
	}
	messageID, err := newUUID()
	if err != nil {
		return err
	}

	conn, err := amqp.Dial(url)
	if err != nil {
		return fmt.Errorf("cannot connect to the broker: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	// Publisher confirms: the broker acknowledges every message it has taken.
	if err := ch.Confirm(false); err != nil {
		return err
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	// With mandatory, a message no queue took comes back before its confirm instead of being
	// dropped: the buffered channel holds it by the time the confirm arrives.
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = ch.PublishWithContext(ctx, "", queue, true, false, amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent, // survives a broker restart
		MessageId:    messageID,
		Body:         body,
	})
	if err != nil {
		return err
	}
	select {
	case confirmed, open := <-confirms:
		if !open {
			return errors.New("the channel closed before the broker confirmed the message")
		}
		if !confirmed.Ack {
			return errors.New("the broker refused the message")
		}
	case <-ctx.Done():
		return errors.New("no confirm from the broker within 10 s")
	}
	select {
	case returned := <-returns:
		return fmt.Errorf("no queue %q took the message (%s); is job-closer's queue declared?", queue, returned.ReplyText)
	default:
	}
	fmt.Printf("Published the close request for %s to %q.\n", externalID, queue)
	return nil
}

// newUUID returns a random (version 4) UUID for the message_id.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

func getenv(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}
