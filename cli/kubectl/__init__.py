"""`kubectl botsession` (cli.kubectl_plugin): its commands, its sources (the cluster, the
API, Redis) and its output. No kopf, no FastAPI: a plugin starts in half a second."""
