package client

// KeepaliveParams exposes keepaliveParams to the package's tests.
var KeepaliveParams = keepaliveParams
