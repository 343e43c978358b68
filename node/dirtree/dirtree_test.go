package dirtree

import (
	"errors"
	"strings"
	"testing"
)

func TestSplitPath(t *testing.T) {
	for p, want := range map[string]string{"": "", "a": "a", "a/b.txt": "a b.txt", "ü/名前": "ü 名前"} {
		segs, err := SplitPath(p)
		if err != nil || strings.Join(segs, " ") != want {
			t.Errorf("SplitPath(%q) = %q, %v; want %q", p, segs, err, want)
		}
	}
	for _, p := range []string{"/a", "a/", "a//b", "..", "a/../b", "./a", "a/.", "a\x00b"} {
		if _, err := SplitPath(p); !errors.Is(err, ErrBadPath) {
			t.Errorf("SplitPath(%q) = %v, want ErrBadPath", p, err)
		}
	}
}
