# Thin wrappers; the scripts hold the logic.
.PHONY: run test bootstrap lint controlplane

run:          ## the main job: the local stack
	scripts/run.sh

test:         ## the whole test suite, installing what it needs first
	scripts/test.sh

bootstrap:    ## install Debian packages, the venv and the control-plane binaries
	scripts/bootstrap.sh

controlplane: ## build (or find cached) etcd, kube-apiserver and helm
	hack/controlplane/build.sh
