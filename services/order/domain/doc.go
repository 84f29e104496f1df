// Package domain holds the order service's rules: what makes a valid order,
// how its total follows from its items, when a request repeats an earlier
// one, and how an order moves from PENDING to PAID or PAYMENT_FAILED. It
// knows nothing of gRPC or SQL: the store and the clients of the user and
// payment services are adapters behind the ports declared here (Repository,
// Users, Payments).
package domain
