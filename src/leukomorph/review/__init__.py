"""Review workstation: store (SQLAlchemy), import of analyze outputs, FastAPI web app (``serve`` extra)."""
