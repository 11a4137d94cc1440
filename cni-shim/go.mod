module github.com/static-egress/static-egress/cni-shim

go 1.26

toolchain go1.26.8
