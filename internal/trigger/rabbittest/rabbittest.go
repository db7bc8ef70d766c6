// Package rabbittest gives tests the machine's RabbitMQ, starting it when
// it is installed but not running, as the machine's setup does.
package rabbittest

import (
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// Addr is where the machine's RabbitMQ listens.
const Addr = "127.0.0.1:5672"

// startWait bounds how long a RabbitMQ started here may take to listen.
const startWait = 90 * time.Second

var (
	once      sync.Once
	startErr  string
	installed bool // rabbitmq-server is on PATH
)

// URL returns the AMQP URL of the machine's RabbitMQ (guest/guest). When
// nothing listens on Addr it starts `rabbitmq-server -detached`, once per
// test binary, and waits for it. The test is skipped, saying why, only when
// RabbitMQ is not installed here at all; one installed that does not come
// up fails the test, so a broken broker never passes as a skip.
func URL(t testing.TB) string {
	t.Helper()
	if !listening() {
		once.Do(start)
		switch {
		case startErr != "" && !installed:
			t.Skipf("RabbitMQ is needed and absent: %s", startErr)
		case startErr != "":
			t.Fatal(startErr)
		}
	}
	return "amqp://guest:guest@" + Addr + "/"
}

func listening() bool {
	c, err := net.DialTimeout("tcp", Addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func start() {
	bin, err := exec.LookPath("rabbitmq-server")
	if err != nil {
		startErr = "no RabbitMQ on " + Addr + " and rabbitmq-server is not installed (apt-get install rabbitmq-server)"
		return
	}
	installed = true
	if out, err := exec.Command(bin, "-detached").CombinedOutput(); err != nil {
		startErr = "no RabbitMQ on " + Addr + " and `rabbitmq-server -detached` failed: " + err.Error() + ": " + string(out)
		return
	}
	for deadline := time.Now().Add(startWait); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if listening() {
			return
		}
	}
	startErr = "started rabbitmq-server, but nothing listened on " + Addr + " within " + startWait.String()
}
