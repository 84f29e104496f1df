package grpchandler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/duetkit/duet/kit/apierr"
	"github.com/duetkit/duet/services/payment/domain"
)

// TestStatus checks the mapping of errors that wrap more than one cause:
// a charge the provider answered but whose recording ran out of its own
// deadline must say CHARGE_NOT_RECORDED (money may have moved; send the
// same key again), and be logged, not pass for the caller's deadline.
func TestStatus(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantCode   codes.Code
		wantReason string
		wantLog    string
	}{
		{
			name:       "not recorded, record deadline passed",
			err:        fmt.Errorf("%w (key k1): %w", domain.ErrNotRecorded, context.DeadlineExceeded),
			wantCode:   codes.Unavailable,
			wantReason: ReasonChargeNotRecorded,
			wantLog:    "payment charge not recorded",
		},
		{
			name:       "not recorded, record cancelled",
			err:        fmt.Errorf("%w (key k1): %w", domain.ErrNotRecorded, context.Canceled),
			wantCode:   codes.Unavailable,
			wantReason: ReasonChargeNotRecorded,
			wantLog:    "payment charge not recorded",
		},
		{
			// The void's last error a deadline: still the operators'
			// business, not the caller's deadline.
			name:       "captured after the cancel, not voided",
			err:        fmt.Errorf("%w (key k1): %v", domain.ErrNotVoided, context.DeadlineExceeded),
			wantCode:   codes.Unavailable,
			wantReason: ReasonChargeNotVoided,
			wantLog:    "not voided",
		},
		{
			name:       "caller's deadline",
			err:        fmt.Errorf("charging: %w", context.DeadlineExceeded),
			wantCode:   codes.DeadlineExceeded,
			wantReason: apierr.ReasonDeadline,
		},
		{
			name:       "provider down",
			err:        fmt.Errorf("%w: %w", domain.ErrProviderUnavailable, errors.New("dial tcp: refused")),
			wantCode:   codes.Unavailable,
			wantReason: ReasonProviderUnavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logged strings.Builder
			h := New(nil, slog.New(slog.NewTextHandler(&logged, nil)))
			err := h.status(t.Context(), tt.err, "", "k1")
			if got := apierr.Code(err); got != tt.wantCode {
				t.Errorf("code = %v, want %v (%v)", got, tt.wantCode, err)
			}
			if got := apierr.Reason(err); got != tt.wantReason {
				t.Errorf("reason = %q, want %q", got, tt.wantReason)
			}
			if tt.wantLog == "" && logged.Len() > 0 {
				t.Errorf("log = %q, want nothing: the caller's own errors are not the operators'", logged.String())
			}
			if !strings.Contains(logged.String(), tt.wantLog) {
				t.Errorf("log = %q, want it to contain %q", logged.String(), tt.wantLog)
			}
		})
	}
}
