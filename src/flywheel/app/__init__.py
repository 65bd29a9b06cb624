"""The application layer: the only code that combines the journal, the planner and the runner.

Interfaces (the CLI, the dashboard, the `sfn` commands, reports) call it and render what it returns;
the core (spec, events, state, planner, journal, runner, executors, outputs) never imports it.

- `session`: what a command works on (project, environment, home);
- `policies`: the rules about runs (running or crashed, already recovered, what a bare resume picks);
- `facts`: what the planner needs to know (outputs that verify, stale steps, root-cause warnings);
- `runs`: prepare and execute a run, the one way every command starts one;
- `queries`: status, history, logs, verify, mark;
- `views`: runs, plans and checks as JSON;
- `secrets`: the redactor of a session (the secret values it masks everywhere).

`flywheel.api` is its public face for library callers.
"""
