"""Private, throw-away servers for tests and local runs.

Each server here is a real process (redis-server, PostgreSQL, etcd, kube-apiserver) on a
free loopback port with its state in a temporary directory, stopped and removed on exit.
"""
