"""Serving: BentoML deployments run by the serving runtime, routes behind the gateway, feature views,
and the prediction log."""
