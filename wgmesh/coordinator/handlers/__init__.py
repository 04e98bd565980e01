"""The coordinator's request handlers, module-level and grouped by who calls them; `app.py` wires them."""
