package config

import (
	"fmt"
	"strings"
	"time"

	units "github.com/docker/go-units"
	"github.com/prometheus/common/model"
)

// Size is a number of bytes. In the file it is written like docker's flags:
// 512m, 32g, 1.5GiB, or a plain number of bytes. Units are binary (1g = 1024m).
type Size int64

// ParseSize parses a size; the error is a short phrase fit for "FILE:LINE: memory: ...".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	if strings.HasPrefix(t, "-") {
		return 0, fmt.Errorf("size %s is negative", excerpt(s))
	}
	n, err := units.RAMInBytes(t)
	if err != nil {
		return 0, fmt.Errorf("invalid size %s (use a number with an optional unit: 512m, 32g, 1.5GiB)", excerpt(s))
	}
	if n < 0 {
		return 0, fmt.Errorf("size %s is too large", excerpt(s))
	}
	return Size(n), nil
}

// String is the human form: 16GiB, 512MiB.
func (s Size) String() string { return units.BytesSize(float64(s)) }

// Flag is the form docker's flags take: 16g, 512m, or bytes.
func (s Size) Flag() string {
	const k = 1024
	switch {
	case s != 0 && s%(k*k*k) == 0:
		return fmt.Sprintf("%dg", s/(k*k*k))
	case s != 0 && s%(k*k) == 0:
		return fmt.Sprintf("%dm", s/(k*k))
	case s != 0 && s%k == 0:
		return fmt.Sprintf("%dk", s/k)
	}
	return fmt.Sprintf("%d", int64(s))
}

// Duration is a time span that may be "never" (null in the file). Written as
// 48h, 7d, 1w, 90m, 1h30m.
type Duration struct {
	D     time.Duration
	Never bool
}

// Never is the null duration.
var Never = Duration{Never: true}

// ParseDuration parses 48h, 7d, 2w, 30m, 1h30m, or "never".
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	if t == "never" || t == "null" {
		return Never, nil
	}
	if strings.HasPrefix(t, "-") {
		return Duration{}, fmt.Errorf("duration %s is negative", excerpt(s))
	}
	d, err := model.ParseDuration(t)
	if err != nil {
		return Duration{}, fmt.Errorf("invalid duration %s (use 30m, 48h, 7d, 2w, or null for never)", excerpt(s))
	}
	if d == 0 {
		return Duration{}, fmt.Errorf("duration %s is zero (use null for never)", excerpt(s))
	}
	return Duration{D: time.Duration(d)}, nil
}

func (d Duration) String() string {
	if d.Never {
		return "never"
	}
	return model.Duration(d.D).String()
}

// MarshalJSON writes null for never, else the string form.
func (d Duration) MarshalJSON() ([]byte, error) {
	if d.Never {
		return []byte("null"), nil
	}
	return []byte(fmt.Sprintf("%q", d.String())), nil
}
