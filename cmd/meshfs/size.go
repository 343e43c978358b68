package main

import (
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// sizeUnits maps a unit suffix (lower-cased) to its multiplier. The
// convention is dd's and docker's: a bare letter or an IEC suffix ("k",
// "KiB") is a power of 1024, while an SI suffix ("kB", "MB") is a power of
// 1000, so "500MB" means what a disk vendor means and "64K" what a
// programmer means.
var sizeUnits = map[string]uint64{
	"":    1,
	"b":   1,
	"k":   1 << 10,
	"kib": 1 << 10,
	"kb":  1e3,
	"m":   1 << 20,
	"mib": 1 << 20,
	"mb":  1e6,
	"g":   1 << 30,
	"gib": 1 << 30,
	"gb":  1e9,
	"t":   1 << 40,
	"tib": 1 << 40,
	"tb":  1e12,
	"p":   1 << 50,
	"pib": 1 << 50,
	"pb":  1e15,
}

// parseSize parses a byte count such as "65536", "64KiB", "500MB", "1.5 GiB".
// Fractions are allowed and rounded down to a whole byte.
func parseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, errors.New("empty size")
	}
	// Split into the number and the unit at the first character that cannot
	// be part of a decimal number.
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" || num == "." {
		return 0, fmt.Errorf("size %q: no number (want e.g. 65536, 64KiB, 500MB)", s)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (want B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)", s, t[i:])
	}
	// big.Rat keeps "1.1GB" exact, where float64 would be off by a byte
	// for some inputs.
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("size %q: malformed number %q", s, num)
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).SetUint64(mult)))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsUint64() {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n.Uint64(), nil
}

// formatSize renders n bytes for humans in IEC units ("1.5 GiB", "512 B").
func formatSize(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, exp := float64(n), 0
	// Rounding to one decimal may carry into the next unit ("1024.0 KiB"),
	// hence the 1023.95 bound rather than 1024.
	for v >= 1023.95 && exp < 6 {
		v /= 1024
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[exp-1])
}

// sizeValue is a pflag.Value for byte counts written with parseSize's syntax.
type sizeValue uint64

func (v *sizeValue) String() string { return fmt.Sprint(uint64(*v)) }
func (v *sizeValue) Type() string   { return "size" }
func (v *sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v = sizeValue(n)
	return nil
}

// autoBlockSize is how --block-size says "not forced": each upload's block
// size is then chosen to fit it (64KiB, less for a small protected file).
const autoBlockSize = "auto"

// blockSizeValue is --block-size: "auto" (0) or a byte count. A count of 0
// is refused rather than taken for "auto", so that a typo is not a setting.
type blockSizeValue uint64

func (v *blockSizeValue) String() string {
	if *v == 0 {
		return autoBlockSize
	}
	return fmt.Sprint(uint64(*v))
}
func (v *blockSizeValue) Type() string { return "size" }
func (v *blockSizeValue) Set(s string) error {
	if strings.EqualFold(strings.TrimSpace(s), autoBlockSize) {
		*v = 0
		return nil
	}
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("a block size of 0 bytes: give a size, or %s", autoBlockSize)
	}
	*v = blockSizeValue(n)
	return nil
}
