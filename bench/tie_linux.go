package main

import (
	"os/exec"
	"syscall"
)

// tieToParent has cmd's process sent SIGTERM when the bench dies: the
// bench's own children end when their stdin closes, but a `duet up` of the
// start-up scenario outlived a bench that was killed or crashed. (The
// signal follows the thread that started cmd; the bench locks no thread
// it lets exit, so it comes only when the process goes.)
func tieToParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
