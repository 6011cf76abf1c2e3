// The local cluster's DNS: CoreDNS with only the plugins of the Corefile hack/node-up.sh
// writes (bind, ready, errors, cache, kubernetes), in CoreDNS's own order (its plugin.cfg).
// CoreDNS's own main links every plugin (the cloud providers' SDKs among them), which made it
// the slowest part of a first build after Kubernetes. `go mod tidy` here after a version
// change.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "ready", "errors", "cache", "kubernetes"}
}

func main() {
	coremain.Run()
}
