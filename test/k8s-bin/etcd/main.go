// etcd's own entry point (the upstream go.etcd.io/etcd/v3 main module is not published at 3.7),
// so the tests can build the server from the go.etcd.io/etcd/server/v3 module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
