package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/duetkit/duet/kit/metrics"
)

// TestUnreadBareErrors: a failure to read a request that grpc-go returns
// bare (a message cut short after the request, a context's end) is logged
// with the code grpc-go sent for it, not UNKNOWN at ERROR.
func TestUnreadBareErrors(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantCode  codes.Code
		wantLevel string
	}{
		{"cut short", io.ErrUnexpectedEOF, codes.Internal, "INFO"},
		{"cancelled", context.Canceled, codes.Canceled, "INFO"},
		{"status", status.Error(codes.ResourceExhausted, "too large"), codes.ResourceExhausted, "WARN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			s, err := New(Config{Logger: slog.New(slog.NewJSONHandler(&out, nil)), Metrics: metrics.New()})
			if err != nil {
				t.Fatal(err)
			}
			// Its stream workers are started by New.
			defer s.grpc.Stop()
			// What a generated handler does: read, then call the chain.
			generated := func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(emptypb.Empty)
				if err := dec(in); err != nil {
					return nil, err
				}
				t.Error("the chain was called after a failed read")
				return nil, nil
			}
			h := s.reportUnread("/test.v1.Service/Method", generated)
			_, err = h(nil, t.Context(), func(any) error { return tt.err }, nil)
			if status.Code(err) != tt.wantCode {
				t.Errorf("handler returned %v, want %v", err, tt.wantCode)
			}
			var line struct {
				Level string `json:"level"`
				Code  string `json:"grpc.code"`
			}
			if err := json.Unmarshal(out.Bytes(), &line); err != nil {
				t.Fatalf("access line %q: %v", out.String(), err)
			}
			if line.Code != tt.wantCode.String() || line.Level != tt.wantLevel {
				t.Errorf("access line says %s at %s, want %v at %s", line.Code, line.Level, tt.wantCode, tt.wantLevel)
			}
		})
	}
}
