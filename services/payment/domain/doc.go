// Package domain holds the payment service's rules: what a charge is, when
// it may be repeated, and how much of it may be refunded. It knows nothing
// of gRPC or SQL; the store, the provider and the gRPC server are adapters
// plugged into the ports declared here (Repository, Provider).
package domain
