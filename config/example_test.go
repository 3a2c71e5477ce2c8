package config_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	_ "github.com/polybus/polybus/adapters/memory" // registers mem://
	"github.com/polybus/polybus/config"
)

// Load reads a profile; Open opens its broker.
func ExampleLoad() {
	dir, _ := os.MkdirTemp("", "config-example-")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "polybus.yaml")
	_ = os.WriteFile(path, []byte("url: embedded://./data\nprofiles:\n  test:\n    url: mem://\n    connect_timeout: 2s\n"), 0o600)

	cfg, err := config.Load(path, "test")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.URL, cfg.ConnectTimeout)

	c, err := config.Open(context.Background(), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close(context.Background())
	fmt.Println(c.Capabilities().Name)
	// Output:
	// mem:// 2s
	// memory
}

// A misspelt field is an error that names the line.
func ExampleLoad_strict() {
	dir, _ := os.MkdirTemp("", "config-example-")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "polybus.yaml")
	_ = os.WriteFile(path, []byte("url: mem://\nconect_timeout: 2s\n"), 0o600)

	_, err := config.Load(path, "")
	msg := err.Error()
	fmt.Println(msg[strings.Index(msg, "line "):])
	// Output:
	// line 2: unknown field conect_timeout (known: url, connect_timeout, profile, profiles)
}
