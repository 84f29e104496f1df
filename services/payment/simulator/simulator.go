// Package simulator is a deterministic payment provider for development and
// tests: the payment method token alone decides the outcome, so every
// environment behaves the same and no real money moves.
package simulator

import (
	"context"

	"github.com/duetkit/duet/services/payment/domain"
)

// The test tokens, as documented on duet.payment.v1.PaymentService.
const (
	// TokenApprove is captured.
	TokenApprove = "tok_approve"
	// TokenDecline is declined with reason PAYMENT_DECLINED.
	TokenDecline = "tok_decline"
	// TokenInsufficient is declined with reason INSUFFICIENT_FUNDS.
	TokenInsufficient = "tok_insufficient"
	// TokenUnavailable fails temporarily, every time.
	TokenUnavailable = "tok_unavailable"
)

// Provider is the simulated provider. The zero value is ready to use.
type Provider struct{}

var _ domain.Provider = Provider{}

// Charge decides by token; any token not listed above is unknown.
func (Provider) Charge(ctx context.Context, c domain.ProviderCharge) (domain.ProviderResult, error) {
	if err := ctx.Err(); err != nil {
		return domain.ProviderResult{}, err
	}
	switch c.Token {
	case TokenApprove:
		return domain.ProviderResult{Approved: true}, nil
	case TokenDecline:
		return domain.ProviderResult{DeclineReason: domain.ReasonDeclined}, nil
	case TokenInsufficient:
		return domain.ProviderResult{DeclineReason: domain.ReasonInsufficientFunds}, nil
	case TokenUnavailable:
		return domain.ProviderResult{}, domain.ErrProviderUnavailable
	default:
		return domain.ProviderResult{}, domain.ErrUnknownPaymentMethod
	}
}

// Void has nothing to undo: the simulator moves no money and keeps no
// record of what it approved.
func (Provider) Void(ctx context.Context, _ string) error {
	return ctx.Err()
}

// Refund has nothing to return: the simulator moves no money, so every
// refund is confirmed at once.
func (Provider) Refund(ctx context.Context, _ domain.ProviderRefund) error {
	return ctx.Err()
}
