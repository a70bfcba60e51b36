"""The domain core of botsession-operator: no kopf, no FastAPI, plain testable functions."""
