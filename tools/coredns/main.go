// Command coredns is CoreDNS with only the plugins the local cluster's DNS uses: names of
// Services and Pods served from the API server, cached, with health and readiness endpoints for
// the kubelet's probes. Nothing is forwarded: the cluster's DNS answers only for names the
// cluster itself defines, so no query leaves the machine. Leaving out the other plugins cuts
// the cold build from minutes to a fraction of that.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// The order in which the plugins see a query; it follows CoreDNS's own plugin.cfg.
	dnsserver.Directives = []string{"ready", "health", "errors", "log", "cache", "kubernetes", "loop"}
}

func main() {
	coremain.Run()
}
