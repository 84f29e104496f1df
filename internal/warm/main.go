package main

import (
	_ "buf.build/go/protovalidate"
	_ "github.com/google/uuid"
	_ "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	_ "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	_ "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/pressly/goose/v3"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	_ "go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	_ "go.opentelemetry.io/otel/sdk/trace"
	_ "go.uber.org/goleak"
	_ "google.golang.org/grpc/health"
	_ "google.golang.org/grpc/reflection"
	_ "modernc.org/sqlite"
	_ "github.com/duetkit/duet/gen/duet/user/v1"
	_ "github.com/duetkit/duet/gen/duet/order/v1"
	_ "github.com/duetkit/duet/gen/duet/payment/v1"
)

func main() {}
