package config

import "github.com/kaccess/kaccess/internal/duration"

// Duration is a time.Duration written as "30s", "8h" or "1h30m" in the file.
type Duration = duration.Duration
