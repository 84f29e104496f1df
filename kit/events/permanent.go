package events

import "errors"

// Permanent marks err as a failure no redelivery can cure: an event that
// cannot be decoded, say, or one the handler's rules refuse whatever
// happens meanwhile. A consumer logs it at error level and terminates the
// event, so JetStream never delivers it to that consumer again. Left to
// the ordinary retries, such an event would be redelivered for ever, and
// enough of them (JetStream's MaxAckPending, 1,000 unless configured)
// would stop the consumer getting any new event at all. Permanent(nil) is
// nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked by
// Permanent.
func IsPermanent(err error) bool {
	_, ok := errors.AsType[*permanentError](err)
	return ok
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }
