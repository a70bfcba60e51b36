# Thin wrappers; the scripts hold the logic.
.PHONY: run test bootstrap controlplane node cluster kind-e2e

run:          ## the main job: the whole stack locally (make run ARGS=--demo)
	scripts/run.sh $(ARGS)

test:         ## the whole test suite, installing what it needs first
	scripts/test.sh

bootstrap:    ## install Debian packages, the venv, the control-plane and node binaries
	scripts/bootstrap.sh

controlplane: ## build (or find cached) etcd, kube-apiserver and helm
	hack/controlplane/build.sh

node:         ## build (or find cached) kubelet, kube-proxy, scheduler, controller-manager, CoreDNS, pause
	hack/node/build.sh

cluster:      ## a real local cluster with Redis, PostgreSQL and the chart (make cluster ARGS=--api-mode=deployment)
	scripts/bootstrap.sh
	.venv/bin/botsession cluster up $(ARGS)

kind-e2e:     ## with Docker + kind: cluster, image, chart, then the e2e suite against it
	scripts/kind-e2e.sh
