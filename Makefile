# Thin wrappers; the scripts hold the logic.
.PHONY: run test bootstrap controlplane kind-e2e

run:          ## the main job: the whole stack locally (make run ARGS=--demo)
	scripts/run.sh $(ARGS)

test:         ## the whole test suite, installing what it needs first
	scripts/test.sh

bootstrap:    ## install Debian packages, the venv and the control-plane binaries
	scripts/bootstrap.sh

controlplane: ## build (or find cached) etcd, kube-apiserver and helm
	hack/controlplane/build.sh

kind-e2e:     ## with Docker + kind: cluster, image, chart, then the e2e suite against it
	scripts/kind-e2e.sh
