// Package connectrelay is what a vendor's own code sees of connectrelay: the
// hooks the worker calls, the requests they receive, and the tenant and
// transfer models they are given.
//
// connectrelay is the endpoint Atlassian calls for an app's Connect lifecycle
// callbacks and App Migration Platform webhooks. The receiver authenticates
// each call, stores what must not be lost and enqueues a task; a worker fleet
// does the slow work. A vendor plugs their own work into the worker:
//
//   - an [Initializer] runs after every verified installed callback;
//   - a [LifecycleListener] hears enabled, disabled and uninstalled;
//   - an [Importer] receives each uploaded file of an app migration.
//
// Each hook takes one request struct ([InitRequest], [LifecycleEvent],
// [ImportRequest]) so that fields can be added without breaking anyone. The
// worker itself is assembled by package service; a vendor's worker binary
// imports this package and service:
//
//	func main() {
//		service.RunWorker(service.WorkerOptions{Initializer: onboarding{}, Importer: importer{}})
//	}
//
// The public API of the module is this package, service, config, connect,
// product (with product/producttest) and connectrelaytest. Every other
// package (handlers, tasks, dedupe and everything under internal/) is
// machinery that may change between releases.
package connectrelay
