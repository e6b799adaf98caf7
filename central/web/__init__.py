"""Server-rendered dashboard (Jinja2)."""
