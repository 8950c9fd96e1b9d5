// Package robustness holds sluice's robustness evidence: the fault matrix
// (Toxiproxy between client, proxy and upstream), the overload and
// graceful-shutdown measurements and the soak, each run side by side with
// peers (nginx, httputil.ReverseProxy). It is a module of its own, so that
// the fault injector's client library and the plotting library stay out
// of the library's dependencies. docs/robustness.md has the results and
// the commands that made them.
package robustness
