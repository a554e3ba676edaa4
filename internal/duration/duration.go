// Package duration is the one way a duration is written in kaccess' configuration files:
// "30s", "8h", "1h30m" (a bare number is refused: its unit would be a guess).
package duration

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration written as "30s", "8h" or "1h30m" in the file.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration in Go's notation.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "30s"-style strings; a bare number is refused because its unit is unclear.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\" or \"8h\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w (use units such as \"30s\", \"5m\", \"8h\")", s, err)
	}
	*d = Duration(v)
	return nil
}
