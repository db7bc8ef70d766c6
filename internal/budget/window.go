package budget

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/config"
)

// windowKey names the counters a call made at now (for task windows, in
// task) is charged to, and when they start again (zero: never). ok is false
// for a window this package does not know, which validation rules out.
func windowKey(window string, now time.Time, task string) (key string, resetAt time.Time, ok bool) {
	now = now.UTC()
	y, m, d := now.Date()
	switch window {
	case config.WindowHour:
		return now.Format("2006-01-02T15"), time.Date(y, m, d, now.Hour()+1, 0, 0, 0, time.UTC), true
	case config.WindowDay:
		return now.Format("2006-01-02"), time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC), true
	case config.WindowMonth:
		return now.Format("2006-01"), time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC), true
	case config.WindowTotal:
		return "total", time.Time{}, true
	case config.WindowTask:
		return taskPrefix + taskToken(task), time.Time{}, true
	}
	return "", time.Time{}, false
}

// taskPrefix starts the window key of a task window's counters.
const taskPrefix = "task."

// maxPlainTask is the longest task id kept readable in a key; longer ids are
// hashed so that keys stay short.
const maxPlainTask = 128

// taskToken turns a task id into one valid key token. Ids made of letters,
// digits, '-' and '_' are kept as they are, so that keys read well in `nats kv
// ls`; others are "=" and their base64url encoding; ids longer than
// maxPlainTask bytes are "==" and a digest, which cannot be read back.
func taskToken(task string) string {
	if len(task) > maxPlainTask {
		sum := sha256.Sum256([]byte(task))
		return "==" + hex.EncodeToString(sum[:16])
	}
	if task != "" && strings.IndexFunc(task, func(r rune) bool { return !isPlain(r) }) < 0 {
		return task
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(task))
}

func isPlain(r rune) bool {
	return r == '-' || r == '_' || ('0' <= r && r <= '9') || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z')
}

// errHashedTask: the token holds a digest of a long task id, not the id.
var errHashedTask = errors.New("task id too long to be kept; only its digest is")

// parseTaskToken is the inverse of taskToken. Tokens of hashed ids, and
// tokens taskToken never makes, are errors.
func parseTaskToken(token string) (string, error) {
	switch {
	case strings.HasPrefix(token, "=="):
		return "", errHashedTask
	case strings.HasPrefix(token, "="):
		raw, err := base64.RawURLEncoding.DecodeString(token[1:])
		if err != nil {
			return "", errors.New("bad task token: " + err.Error())
		}
		if taskToken(string(raw)) != token {
			return "", errors.New("bad task token: not in its canonical form")
		}
		return string(raw), nil
	case token == "" || len(token) > maxPlainTask || strings.IndexFunc(token, func(r rune) bool { return !isPlain(r) }) >= 0:
		return "", errors.New("bad task token")
	}
	return token, nil
}
