"""`flywheel ui`: a local web dashboard over the journal of one flywheel home.

The dashboard is another reader of the journal (like `flywheel status`) plus one writer that never
runs anything itself: a Resume starts `python -m flywheel resume RUN --yes` in a background process,
and the page follows that run through the journal like any other.

Layout: `views` builds what pages show from the journal (no web framework), `security` holds the token,
Host, Origin and CSRF checks, `launcher` starts and tracks resume processes, `live` turns a running run
into server-sent events, `app` wires routes and templates (Starlette + Jinja2), `cli` is the Typer
command. Only `cli` is imported by `flywheel --help`; it imports the rest when the command runs.
"""
