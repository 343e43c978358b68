package main

import "testing"

func TestParseSize(t *testing.T) {
	good := []struct {
		in   string
		want uint64
	}{
		{"0", 0},
		{"65536", 65536},
		{"64KiB", 64 << 10},
		{"64kib", 64 << 10},
		{"64K", 64 << 10},
		{"64k", 64 << 10},
		{"64kB", 64000},
		{"500MB", 500e6},
		{"500 MB", 500e6},
		{" 10GiB ", 10 << 30},
		{"10G", 10 << 30},
		{"1.5GiB", 3 << 29},
		{"1.1GB", 1100000000}, // exact, no float rounding
		{"0.5KiB", 512},
		{"0.1KiB", 102}, // rounded down to whole bytes
		{"2TiB", 2 << 40},
		{"3TB", 3e12},
		{"1PiB", 1 << 50},
		{"12B", 12},
		{"18446744073709551615", 1<<64 - 1},
	}
	for _, tc := range good {
		got, err := parseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "  ", "abc", "KiB", "-1", "1.2.3", "10XB", "10 GiBs", "16EiB", "16384PiB", "18446744073709551616", "."} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for _, tc := range []struct {
		in   uint64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{1<<20 - 1, "1.0 MiB"}, // would be "1024.0 KiB" without the carry
		{10 << 30, "10.0 GiB"},
		{1<<64 - 1, "16.0 EiB"},
	} {
		if got := formatSize(tc.in); got != tc.want {
			t.Errorf("formatSize(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSizeValue(t *testing.T) {
	var v sizeValue
	if err := v.Set("4MiB"); err != nil || v != 4<<20 || v.String() != "4194304" {
		t.Fatalf("Set(4MiB): %v, %d, %q", err, v, v.String())
	}
	if err := v.Set("lots"); err == nil {
		t.Fatal("Set(lots) succeeded")
	}
	if v.Type() != "size" {
		t.Fatalf("Type() = %q", v.Type())
	}
}
