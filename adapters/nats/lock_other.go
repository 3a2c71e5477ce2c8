//go:build !unix

package nats

import "os"

// lockDir does nothing where flock is missing: there, keeping one process
// per store directory is the application's job.
func lockDir(string) (*os.File, error) { return nil, nil }

func unlockDir(*os.File) {}
