package api

import (
	"encoding/json"
	"io"
	"strings"
)

// Error is an answer outside 2xx. The server sends its reason as one line
// of plain text, as Codex does; Reason is that line, or the "error" (or
// "message") of the JSON body other servers send.
type Error struct {
	Status string // "404 Not Found"
	Code   int
	Reason string
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return e.Status
	}
	return e.Status + ": " + e.Reason
}

// ErrorLine is the body the server sends for err: one line, so that a
// client can print it as its own one-line error.
func ErrorLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ") + "\n"
}

// maxErrorBody and maxReason keep a reason short enough for a terminal
// whatever a server sends.
const maxErrorBody, maxReason = 4096, 300

// ReadError reads why a request failed from its answer's body.
func ReadError(status string, code int, body io.Reader) *Error {
	b, _ := io.ReadAll(io.LimitReader(body, maxErrorBody))
	var j struct {
		Error   any    `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &j) == nil {
		switch v := j.Error.(type) {
		case string:
			b = []byte(v)
		case nil:
			if j.Message != "" {
				b = []byte(j.Message)
			}
		default:
			if enc, err := json.Marshal(v); err == nil {
				b = enc
			}
		}
	}
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > maxReason {
		s = s[:maxReason] + "…"
	}
	return &Error{Status: status, Code: code, Reason: s}
}
