"""
Supervision: spawning children, watching them die, restarting them by
policy.

L{supervisor.Supervisor} owns every L{process.ManagedProcess} (one per
configured process: its state machine, commands and restart budget);
L{spawn} starts a child in its own session with a parent-death signal;
L{output} captures what it prints; L{orphans} records children in the state
file and ends the leftovers of an orchestrator that was killed;
L{policy} holds the values a restart policy decides on.
"""
