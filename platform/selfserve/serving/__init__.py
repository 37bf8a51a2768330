"""Serving: BentoML deployments run by the serving runtime, routes behind the gateway, feature views,
and the prediction log."""

# What the serving runtime tells each BentoML server it starts (read by ``selfserve.serving.bento_service``;
# its module docstring is the contract).
MODEL_FILE_ENV = "SELFSERVE_SERVING_MODEL_FILE"
INPUTS_ENV = "SELFSERVE_SERVING_INPUTS"
