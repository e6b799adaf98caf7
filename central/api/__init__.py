"""Central's REST API (FastAPI); :func:`central.api.app.create_app` builds the whole web app."""
