"""The registry on the web: a REST API (`/api/v1`) and server-rendered pages over a workspace.

`nexus ui` (one person, 127.0.0.1:8090) and `nexus-registry` (a team) run `app.create_app`.
Every change made here is a Git commit authored by the person whose token made it.
"""

DEFAULT_PORT = 8090  # here, not in settings.py: `nexus ui --help` loads no web library
