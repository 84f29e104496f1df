package simulator_test

import (
	"context"
	"errors"
	"testing"

	"github.com/duetkit/duet/services/payment/domain"
	"github.com/duetkit/duet/services/payment/simulator"
)

func TestProvider(t *testing.T) {
	tests := []struct {
		token   string
		want    domain.ProviderResult
		wantErr error
	}{
		{simulator.TokenApprove, domain.ProviderResult{Approved: true}, nil},
		{simulator.TokenDecline, domain.ProviderResult{DeclineReason: domain.ReasonDeclined}, nil},
		{simulator.TokenInsufficient, domain.ProviderResult{DeclineReason: domain.ReasonInsufficientFunds}, nil},
		{simulator.TokenUnavailable, domain.ProviderResult{}, domain.ErrProviderUnavailable},
		{"tok_other", domain.ProviderResult{}, domain.ErrUnknownPaymentMethod},
		{"", domain.ProviderResult{}, domain.ErrUnknownPaymentMethod},
	}
	for _, tt := range tests {
		t.Run(tt.token, func(t *testing.T) {
			// Twice: the outcome depends on the token alone.
			for range 2 {
				got, err := simulator.Provider{}.Charge(t.Context(), domain.ProviderCharge{Token: tt.token, IdempotencyKey: "k", Amount: domain.Money{Currency: "USD", Units: 1}})
				if got != tt.want || !errors.Is(err, tt.wantErr) {
					t.Fatalf("Charge(%q) = %+v, %v; want %+v, %v", tt.token, got, err, tt.want, tt.wantErr)
				}
			}
		})
	}
}

func TestProviderHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := (simulator.Provider{}).Charge(ctx, domain.ProviderCharge{Token: simulator.TokenApprove}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Charge on a canceled context = %v, want context.Canceled", err)
	}
	if err := (simulator.Provider{}).Refund(ctx, domain.ProviderRefund{IdempotencyKey: "r"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Refund on a canceled context = %v, want context.Canceled", err)
	}
	if err := (simulator.Provider{}).Refund(t.Context(), domain.ProviderRefund{IdempotencyKey: "r"}); err != nil {
		t.Fatalf("Refund = %v, want it confirmed", err)
	}
}
