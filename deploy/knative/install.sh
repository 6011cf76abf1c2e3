#!/usr/bin/env bash
# Installs jobsink next to Knative Eventing, in place of Knative's own JobSink (see
# README.md here). Idempotent: run it again after every Knative upgrade.
#
#   deploy/knative/install.sh                          # kubectl's current context
#   JOBSINK_IMAGE=localhost/jobsink:0.1.0 deploy/knative/install.sh
#
# In order, each step safe to repeat:
#   1. Knative's webhooks skip JobSinks (they would refuse `spec.hook`, even its deletion);
#   2. our JobSink CRD replaces Knative's: the same resource plus `spec.hook`;
#   3. jobsink runs, behind Knative's `job-sink` Service, and holds the Leases of Knative's
#      JobSink reconciler, which then stands by;
#   4. admission policies keep it so through Knative upgrades;
#   5. Knative's own JobSink receiver is scaled to zero.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
deploy=$(cd "$here/.." && pwd)
ns=knative-eventing
step() { echo "==> $*" >&2; }

kubectl -n "$ns" get deployment eventing-controller eventing-webhook >/dev/null 2>&1 || {
  echo "Knative Eventing is not installed here: install jobsink alone with kubectl apply -f deploy/" >&2
  exit 1
}

step "Knative's webhooks skip JobSinks"
kubectl patch mutatingwebhookconfiguration webhook.eventing.knative.dev \
  --field-manager=jobsink --patch-file "$here/webhooks/defaulting.yaml"
kubectl patch validatingwebhookconfiguration validation.webhook.eventing.knative.dev \
  --field-manager=jobsink --patch-file "$here/webhooks/validation.yaml"

step "the JobSink CRD: Knative's resource plus spec.hook"
kubectl apply -f "$deploy/crd.yaml"
kubectl wait --for=condition=Established crd/jobsinks.sinks.knative.dev --timeout=60s

step "jobsink behind Knative's job-sink Service"
kubectl apply -f "$deploy/rbac.yaml" -f "$here/rbac.yaml"
image=${JOBSINK_IMAGE:-localhost/jobsink:0.1.0}
sed "s#image: localhost/jobsink:0.1.0#image: $image#" "$here/deployment.yaml" |
  kubectl apply -f -
kubectl apply -f "$deploy/pdb.yaml"
kubectl -n "$ns" rollout status deployment/jobsink --timeout=180s

step "admission policies: jobsink keeps the Service and the CRD through Knative upgrades"
kubectl apply -f "$here/policies.yaml"

step "Knative's JobSink receiver scaled to zero"
kubectl -n "$ns" scale deployment/job-sink --replicas=0
knatives='sinks.knative.dev/sink=job-sink,app.kubernetes.io/part-of!=jobsink'
for _ in $(seq 120); do
  [ -z "$(kubectl -n "$ns" get pods -l "$knatives" -o name)" ] && break
  sleep 1
done
kubectl -n "$ns" get endpointslices -l kubernetes.io/service-name=job-sink
