// Command receiver is the HTTP endpoint Atlassian calls: lifecycle callbacks, the
// App Migration Platform webhook, the descriptor, health, metrics and the
// monitoring UI. It only wires; see package service.
package main

import "github.com/connectrelay/connectrelay/service"

func main() {
	service.RunReceiver(service.ReceiverOptions{})
}
