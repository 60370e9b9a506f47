// Package logging builds the zerolog loggers troupe uses and adapts them to
// franz-go's kgo.Logger.
//
// A logger is always passed in, never global: every component takes a
// zerolog.Logger and derives child loggers that carry its coordinates
// (app, step, saga, topic, partition, offset).
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Field names shared by every log line, so operators can filter on them.
const (
	FieldApp       = "app"
	FieldStep      = "step"
	FieldSaga      = "saga"
	FieldTopic     = "topic"
	FieldPartition = "partition"
	FieldOffset    = "offset"
)

// Format is the output format of a logger.
type Format string

// The formats troupe can write.
const (
	FormatJSON    Format = "json"
	FormatConsole Format = "console"
)

// New returns a logger writing to w at the given level ("debug", "info",
// "warn", "error") in the given format. An unknown level or format is an error
// that names the accepted values.
func New(w io.Writer, level string, format Format) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("unknown log level %q (use debug, info, warn or error)", level)
	}
	switch format {
	case FormatJSON:
	case FormatConsole:
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: !isTerminal(w)}
	default:
		return zerolog.Nop(), fmt.Errorf("unknown log format %q (use json or console)", format)
	}
	// Millisecond timestamps: zerolog's default is whole seconds. This is
	// process-wide in zerolog; every troupe logger wants the same.
	zerolog.TimeFieldFormat = zerolog.TimeFormatUnixMs
	// Durations with their unit ("took=12.3ms", "handler_timeout=5s"):
	// zerolog's default is a bare float of milliseconds.
	zerolog.DurationFieldFormat = zerolog.DurationFormatString
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Kgo adapts l to franz-go's logger. franz-go is chatty at info level (every
// rebalance, every connection), so it is capped at warn unless l is at debug.
func Kgo(l zerolog.Logger) kgo.Logger {
	lvl := kgo.LogLevelWarn
	if l.GetLevel() <= zerolog.DebugLevel {
		lvl = kgo.LogLevelDebug
	}
	return &kgoLogger{l: l.With().Str("component", "kafka").Logger(), lvl: lvl}
}

type kgoLogger struct {
	l   zerolog.Logger
	lvl kgo.LogLevel
}

func (k *kgoLogger) Level() kgo.LogLevel { return k.lvl }

func (k *kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var ev *zerolog.Event
	switch level {
	case kgo.LogLevelError:
		ev = k.l.Error()
	case kgo.LogLevelWarn:
		ev = k.l.Warn()
	case kgo.LogLevelInfo:
		ev = k.l.Info()
	default:
		ev = k.l.Debug()
	}
	for i := 0; i+1 < len(keyvals); i += 2 {
		key, _ := keyvals[i].(string)
		switch v := keyvals[i+1].(type) {
		case error:
			ev = ev.AnErr(key, v)
		case time.Duration:
			ev = ev.Dur(key, v)
		default:
			ev = ev.Interface(key, v)
		}
	}
	ev.Msg(msg)
}
