// Package sqs is polybus's Amazon SQS adapter (placeholder doc, expanded below).
package sqs
