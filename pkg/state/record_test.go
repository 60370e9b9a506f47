package state

import (
	"slices"
	"testing"
)

func TestProgressEncoding(t *testing.T) {
	for _, p := range []Progress{{Next: 0}, {Next: 42}, {Next: 7, Done: []int64{8, 10, 1 << 40}}} {
		got, err := DecodeProgress(EncodeProgress(p))
		if err != nil || got.Next != p.Next || !slices.Equal(got.Done, p.Done) {
			t.Errorf("round trip of %+v: %+v, %v", p, got, err)
		}
	}
	// A store written by EncodeOffset reads as a progress without Done.
	if got, err := DecodeProgress(EncodeOffset(99)); err != nil || got.Next != 99 || got.Done != nil {
		t.Errorf("EncodeOffset(99) reads as %+v, %v", got, err)
	}
	p := Progress{Next: 5, Done: []int64{7, 9}}
	for off, want := range map[int64]bool{0: true, 4: true, 5: false, 6: false, 7: true, 8: false, 9: true, 10: false} {
		if p.Has(off) != want {
			t.Errorf("Has(%d) = %v, want %v", off, !want, want)
		}
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, append(EncodeOffset(1), 0), append(EncodeOffset(1), 0x80)} {
		if _, err := DecodeProgress(bad); err == nil {
			t.Errorf("DecodeProgress(%x) succeeded", bad)
		}
	}
}
