"""SQLAlchemy 2 (async, Core) storage: every SQL query of Stockbell lives in this package."""
