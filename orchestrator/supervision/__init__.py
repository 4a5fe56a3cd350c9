"""
Supervision: spawning children, watching them die, restarting them by
policy.

L{supervisor.Supervisor} owns every L{process.ManagedProcess} (one per
configured process: its child's life cycle) or L{monitored.MonitoredProcess}
(monitor-only), both built on L{supervised.SupervisedProcess}; their parts
are L{status} (the transition table), L{timers}, L{budget} (restart budget),
L{commands} (serialised commands) and L{counters} (per name); L{reconfig}
decides what a reload changes in place and what replaces the child;
L{spawn} starts a child in its own session with a parent-death signal;
L{output} captures what it prints; L{orphans} records children in the state
file and ends the leftovers of an orchestrator that was killed;
L{policy} holds the values a restart policy decides on.
"""
