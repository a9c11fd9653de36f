"""The Flask app: routes, the dashboard, the token, CORS, problems, health and
Prometheus. The only layer that imports Flask."""
