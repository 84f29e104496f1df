package domain_test

import (
	"math"
	"strings"
	"testing"

	"github.com/duetkit/duet/services/notification/domain"
)

const (
	userID  = "0190a3c4-0000-7000-8000-000000000001"
	orderID = "0190a3c4-0000-7000-8000-0000000000aa"
	payID   = "0190a3c4-0000-7000-8000-0000000000bb"
)

func TestCompose(t *testing.T) {
	usd := domain.Money{Currency: "USD", Units: 1999}
	tests := []struct {
		name     string
		in       domain.Occurrence
		want     domain.Kind // "" means no notification
		subject  string
		contains []string // in the body
	}{
		{name: "user created", in: domain.Occurrence{What: domain.UserCreated, UserID: userID, SubjectID: userID, UserName: "Ann"},
			want: domain.KindWelcome, subject: userID, contains: []string{"Hello Ann"}},
		{name: "user created without name", in: domain.Occurrence{What: domain.UserCreated, UserID: userID, SubjectID: userID},
			want: domain.KindWelcome, subject: userID, contains: []string{"account is ready"}},
		{name: "user updated", in: domain.Occurrence{What: domain.UserUpdated, UserID: userID, SubjectID: userID, Changed: []string{"email", "name"}},
			want: domain.KindAccountChanged, subject: userID, contains: []string{"email, name"}},
		{name: "user updated without mask", in: domain.Occurrence{What: domain.UserUpdated, UserID: userID, SubjectID: userID},
			want: domain.KindAccountChanged, subject: userID, contains: []string{"details changed"}},
		{name: "order confirmed", in: domain.Occurrence{What: domain.OrderConfirmed, UserID: userID, SubjectID: orderID, Amount: usd},
			want: domain.KindOrderConfirmed, subject: orderID, contains: []string{orderID, "19.99 USD"}},
		{name: "order cancelled", in: domain.Occurrence{What: domain.OrderCancelled, UserID: userID, SubjectID: orderID, Reason: "PAYMENT_DECLINED"},
			want: domain.KindOrderCancelled, subject: orderID, contains: []string{orderID, "PAYMENT_DECLINED"}},
		{name: "order rejected", in: domain.Occurrence{What: domain.OrderRejected, UserID: userID, SubjectID: orderID, Reason: "OUT_OF_STOCK"},
			want: domain.KindOrderRejected, subject: orderID, contains: []string{"OUT_OF_STOCK"}},
		{name: "payment refunded", in: domain.Occurrence{What: domain.PaymentRefunded, UserID: userID, SubjectID: payID, Amount: domain.Money{Currency: "JPY", Units: 500}},
			want: domain.KindRefund, subject: payID, contains: []string{"500 JPY", payID}},
		{name: "payment refunded without amount", in: domain.Occurrence{What: domain.PaymentRefunded, UserID: userID, SubjectID: payID},
			want: domain.KindRefund, subject: payID, contains: []string{payID}},
		{name: "refund without user", in: domain.Occurrence{What: domain.PaymentRefunded, SubjectID: payID, Amount: usd}},
		{name: "order without user", in: domain.Occurrence{What: domain.OrderConfirmed, SubjectID: orderID}},
		{name: "other happening", in: domain.Occurrence{What: domain.HappeningOther, UserID: userID, SubjectID: payID}},
		{name: "unknown happening value", in: domain.Occurrence{What: domain.Happening(99), UserID: userID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := domain.Compose(tt.in)
			if tt.want == "" {
				if ok {
					t.Fatalf("Compose = %+v, want none", got)
				}
				return
			}
			if !ok {
				t.Fatal("Compose made no message")
			}
			if got.Kind != tt.want || got.UserID != tt.in.UserID || got.SubjectID != tt.subject {
				t.Errorf("Compose = %+v, want kind %s for %s about %s", got, tt.want, tt.in.UserID, tt.subject)
			}
			if got.Title == "" {
				t.Error("empty title")
			}
			for _, s := range tt.contains {
				if !strings.Contains(got.Body, s) {
					t.Errorf("body %q does not contain %q", got.Body, s)
				}
			}
		})
	}
}

func TestMoneyString(t *testing.T) {
	tests := []struct {
		in   domain.Money
		want string
	}{
		{domain.Money{Currency: "USD", Units: 1999}, "19.99 USD"},
		{domain.Money{Currency: "EUR", Units: 5}, "0.05 EUR"},
		{domain.Money{Currency: "EUR", Units: 0}, "0.00 EUR"},
		{domain.Money{Currency: "EUR", Units: -150}, "-1.50 EUR"},
		{domain.Money{Currency: "JPY", Units: 1999}, "1999 JPY"},
		{domain.Money{Currency: "KWD", Units: 1500}, "1.500 KWD"},
		{domain.Money{Currency: "BHD", Units: -5}, "-0.005 BHD"},
		{domain.Money{Currency: "CLF", Units: 12345}, "1.2345 CLF"},
		{domain.Money{Currency: "UYI", Units: 70}, "70 UYI"},
		{domain.Money{Currency: "EUR", Units: math.MinInt64}, "-92233720368547758.08 EUR"},
		{domain.Money{}, ""},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCheckID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{userID, true},
		{"", false},
		{"not-a-uuid", false},
		{"{" + userID + "}", false},
		{strings.ReplaceAll(userID, "-", ""), false},
	}
	for _, tt := range tests {
		err := domain.CheckID("user_id", tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("CheckID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}
