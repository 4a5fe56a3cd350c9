"""
Telling the world: the event bus every transition goes through, and the
Prometheus collector served on C{/metrics}.

L{events.EventBus} numbers events and hands them to subscribers (the API's
event log and stream, the notifiers); L{metrics} exports live state at
scrape time.  Notifier kinds themselves are plugins
(C{plugins/notifiers.py}).
"""
