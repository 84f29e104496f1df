// Package domain holds the order service's rules: what makes a valid order,
// when a request repeats an earlier one, and the saga that takes an order
// from PENDING to CONFIRMED, CANCELLED or REJECTED — check the user, price
// the items, reserve stock, charge, commit the stock — with compensation
// (refund, release) when a step fails.
//
// The saga's state lives in the order itself (Step, Attempts, NextAttempt,
// StepDeadline, FailedStep) and is stored after every step, so any process
// can pick an unfinished order up where the last one left it: Service.Step
// runs one step of one order, and every step is idempotent on the order id.
//
// The package knows nothing of gRPC or SQL: the store and the clients of
// the user, inventory and payment services are adapters behind the ports
// declared here (Repository, Users, Inventory, Payments).
package domain
