#!/usr/bin/env bash
# Creates, once, the certificates and kubeconfigs of the local cluster in $1/pki:
# a CA; the kube-apiserver serving certificate (the node address, 127.0.0.1, the `kubernetes`
# Service IP and names); an admin client certificate (O=system:masters) used by the control
# plane components, kube-proxy and CoreDNS; the kubelet's client certificate
# (system:node:<node>, so the Node authorizer applies); the service-account signing key pair;
# and the front proxy's own CA and client certificate, with which kube-apiserver forwards
# requests to aggregated APIs (an APIService backed by a Service, e.g. Kueue's visibility
# API) and which those servers trust to tell them who asked.
# Writes $1/admin.kubeconfig and $1/kubelet.kubeconfig.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
dir=$1
pki=$dir/pki
mkdir -p "$pki"
cd "$pki"
# client_cert <file stem> <subject>: a client certificate signed by the cluster CA.
client_cert() {
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile client.ext -out "$1.crt" 2>/dev/null
}
if [ ! -f kubelet.crt ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=jobsink-local-ca" \
    -keyout ca.key -out ca.crt 2>/dev/null
  svc=kubernetes.default.svc
  cat >apiserver.ext <<EOT
subjectAltName=IP:$NODE_IP,IP:127.0.0.1,IP:$KUBERNETES_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:$svc,DNS:$svc.$CLUSTER_DOMAIN
extendedKeyUsage=serverAuth
EOT
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout apiserver.key -out apiserver.csr 2>/dev/null
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  client_cert admin "/O=system:masters/CN=jobsink-admin"
  client_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
fi
# Made separately, so that a state directory from before gets them too.
if [ ! -f front-proxy-client.crt ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=jobsink-front-proxy-ca" \
    -keyout front-proxy-ca.key -out front-proxy-ca.crt 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  openssl req -newkey rsa:2048 -nodes -subj "/CN=front-proxy-client" \
    -keyout front-proxy-client.key -out front-proxy-client.csr 2>/dev/null
  openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
    -CAcreateserial -days 3650 -extfile client.ext -out front-proxy-client.crt 2>/dev/null
fi
# kubeconfig <file> <user cert stem>
kubeconfig() {
  cat >"$1" <<EOT
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: local
  context: {cluster: local, user: $2, namespace: default}
current-context: local
EOT
}
kubeconfig "$dir/admin.kubeconfig" admin
kubeconfig "$dir/kubelet.kubeconfig" kubelet
