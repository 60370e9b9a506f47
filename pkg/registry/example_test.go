package registry_test

import (
	"context"
	"fmt"
	"net"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/troupehq/troupe/pkg/kafka"
	"github.com/troupehq/troupe/pkg/registry"
)

func ExampleServer() {
	cluster, _ := kfake.NewCluster() // any Kafka cluster
	defer cluster.Close()

	srv, err := registry.New(registry.Config{Kafka: kafka.Config{Brokers: cluster.ListenAddrs()}}, zerolog.Nop())
	if err != nil {
		panic(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }() // or mount srv (an http.Handler) and call srv.Run
	<-srv.Ready()

	cl, _ := sr.NewClient(sr.URLs("http://" + ln.Addr().String()))
	schema := sr.Schema{Schema: `{"type":"record","name":"Paid","fields":[{"name":"orderId","type":"string"}]}`}
	ss, err := cl.CreateSchema(ctx, "payments-Paid", schema)
	fmt.Println(ss.ID, ss.Version, err)

	schema.Schema = `{"type":"record","name":"Paid","fields":[{"name":"orderId","type":"string"},{"name":"cents","type":"long"}]}`
	_, err = cl.CreateSchema(ctx, "payments-Paid", schema)
	fmt.Println(err)

	stop()
	fmt.Println(<-done)
	// Output:
	// 1 1 <nil>
	// Schema being registered is incompatible with an earlier schema for subject "payments-Paid", details: field "cents" (long) was added without a default: data written with version 1 has no value for it; give it a default (BACKWARD: the new schema must read data of version 1)
	// <nil>
}
