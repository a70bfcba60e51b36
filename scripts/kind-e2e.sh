#!/usr/bin/env bash
# For people with Docker and kind: create a kind cluster, build and load the image, install
# Redis and the chart, then run the end-to-end suite against that cluster.
# Not exercised by this project's CI (no Docker engine there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-e2e needs '$tool' on PATH" >&2; exit 1; }
done
image=botsession-operator:dev
token=${BOTSESSION_E2E_TOKEN:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}
kind get clusters | grep -qx botsession || kind create cluster --config kind-config.yaml
docker build -t "$image" .
kind load docker-image "$image" --name botsession
kubectl create namespace bots --dry-run=client -o yaml | kubectl apply -f -
kubectl -n bots create deployment redis --image=redis:7-alpine --dry-run=client -o yaml | kubectl apply -f -
kubectl -n bots expose deployment redis --port 6379 --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install bs deploy/helm/botsession-operator -n bots \
  --set image.repository=botsession-operator --set image.tag=dev --set image.pullPolicy=Never \
  --set redis.url=redis://redis.bots:6379/0 --set database.sqliteVolume.persistent=false \
  --set api.service.type=NodePort \
  --set "auth.tokens[0].name=e2e" --set "auth.tokens[0].token=$token" \
  --set "auth.tokens[0].scopes[0]=admin" --wait --timeout 5m
kubectl -n bots patch service bs-botsession-api --type=json \
  -p '[{"op":"replace","path":"/spec/ports/0/nodePort","value":30080}]'
scripts/bootstrap.sh --no-controlplane
BOTSESSION_E2E_KUBECONFIG=${KUBECONFIG:-$HOME/.kube/config} BOTSESSION_E2E_NAMESPACE=bots \
BOTSESSION_E2E_API=http://127.0.0.1:8080 BOTSESSION_E2E_TOKEN=$token \
  .venv/bin/pytest -m e2e tests/e2e "$@"
