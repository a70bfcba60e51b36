"""A real single-node Kubernetes cluster on this machine, inside namespaces of its own.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd + runc, the CNI
bridge, kubelet, kube-proxy and CoreDNS run in private mount, network, PID, UTS and IPC
namespaces that `Cluster` creates (devstack.cluster.namespace): the host's sysctls, routes,
interfaces and iptables stay as they are, and stopping leaves no process, mount or cgroup.
The host reaches the API server and Services through forwarded loopback ports.
"""

from devstack.cluster.cluster import Cluster

__all__ = ["Cluster"]
