"""The process: ``python app.py``'s options, the supervisor and its workers, systemd's
notifications, the heartbeat, the GC schedule."""
