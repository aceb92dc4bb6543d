// Command worker processes the tasks the receiver enqueues: tenant
// initialization, license tracking, migration webhook registration and migration
// transfers, with the bundled (recording) migration importer. Vendors with their
// own initialization and import code build their own main around
// service.RunWorker instead (see the README). It only wires; see package service.
package main

import "github.com/connectrelay/connectrelay/service"

func main() {
	service.RunWorker(service.WorkerOptions{})
}
