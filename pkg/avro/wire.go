package avro

import (
	"encoding/binary"
	"fmt"
)

// HeaderSize is the length of the Confluent wire-format header: the magic
// byte and the big-endian schema id.
const HeaderSize = 5

// AppendHeader appends the wire-format header for schema id to dst.
func AppendHeader(dst []byte, id int) []byte {
	return append(dst, 0, byte(uint32(id)>>24), byte(uint32(id)>>16), byte(uint32(id)>>8), byte(uint32(id)))
}

// SplitHeader returns the schema id in the header of value and the Avro
// binary that follows it. A value that is too short or does not start with
// the magic byte 0 is an error wrapping ErrBadMagic.
func SplitHeader(value []byte) (id int, payload []byte, err error) {
	if len(value) < HeaderSize {
		return 0, nil, fmt.Errorf("%w: value has %d bytes", ErrBadMagic, len(value))
	}
	if value[0] != 0 {
		return 0, nil, fmt.Errorf("%w: first byte is 0x%02x", ErrBadMagic, value[0])
	}
	return int(binary.BigEndian.Uint32(value[1:HeaderSize])), value[HeaderSize:], nil
}
